"""Search by photo in the admin: an upload or a URL (SSRF-guarded), the ranked candidates with
their verdict; clear errors for a missing, double, oversized, broken or refused photo."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.html import escape
from lookalike_core.match_report import NEW, SAME

from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog
from tests.similarity.services.matching.test_photos import near_copy, unrelated

pytestmark = pytest.mark.django_db

URL = reverse("admin:similarity_photosearch_changelist")


@pytest.fixture
def catalog() -> list:
    articles = make_catalog(12, size=160)
    index_build_run(model="classic", progress=False)
    return articles


def search(admin_client, **data):
    return admin_client.post(URL, {"k": 4, **data})


def candidates(page: str) -> list[str]:
    marker = 'class="search-candidate" data-article="'
    return [part.split('"', 1)[0] for part in page.split(marker)[1:]]


def test_an_uploaded_copy_finds_its_article_first_with_the_verdict_same(admin_client,
                                                                       catalog):
    response = search(admin_client, image=SimpleUploadedFile("copy.jpg", near_copy(3)))
    page = response.content.decode()
    assert response.status_code == 200
    assert candidates(page) == [catalog[3].article_id, *candidates(page)[1:]]
    assert len(candidates(page)) == 4
    assert f'id="search-verdict">{SAME}<' in page
    assert 'src="data:image/jpeg;base64,' in page  # the searched photo is shown
    assert catalog[3].image.url in page  # the candidate's thumbnail
    assert reverse("admin:catalog_article_change", args=[catalog[3].pk]) in page


def test_a_pasted_url_is_fetched_through_the_guard(admin_client, catalog, loopback, settings):
    url = loopback.add("/photo.jpg", unrelated(2))
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": False}
    refused = search(admin_client, image_url=url).content.decode()
    assert 'id="search-error"' in refused and "refused" in refused
    assert loopback.hits.get("/photo.jpg", 0) == 0
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": True}
    page = search(admin_client, image_url=url).content.decode()
    assert f'id="search-verdict">{NEW}<' in page and len(candidates(page)) == 4


@pytest.mark.parametrize(("data", "message"), [
    ({}, "give a photo: upload a file or paste its URL (not both)"),
    ({"image": SimpleUploadedFile("x.jpg", b"not an image")}, "image: "),
    ({"image_url": "ftp://example.com/x.jpg"}, "Enter a valid URL."),
    ({"k": 0}, "Ensure this value is greater than or equal to 1."),
])
def test_bad_input_says_what_is_wrong(admin_client, catalog, data, message):
    page = search(admin_client, **data).content.decode()
    assert escape(message) in page and 'id="search-results"' not in page


def test_both_a_file_and_a_url_are_refused(admin_client, catalog):
    page = search(admin_client, image=SimpleUploadedFile("c.jpg", near_copy(1)),
                  image_url="https://example.com/x.jpg").content.decode()
    assert "(not both)" in page and 'id="search-results"' not in page


def test_uploads_over_the_limit_are_refused_before_decoding(admin_client, catalog, settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "UPLOAD_MAX_BYTES": 100}
    page = search(admin_client, image=SimpleUploadedFile("c.jpg", near_copy(1))).content.decode()
    assert "larger than the limit of 100 bytes" in page


def test_no_index_yet_is_said_plainly(admin_client):
    page = search(admin_client, image=SimpleUploadedFile("c.jpg", near_copy(1))).content.decode()
    assert "no index has been built yet" in page


def test_staff_need_the_view_permission(client, catalog):
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    assert client.get(URL).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_photosearch"))
    assert client.get(URL).status_code == 200
    get_user_model().objects.create_user("shopper", password="pw")
    client.login(username="shopper", password="pw")
    assert "/login/" in client.get(URL)["Location"]
