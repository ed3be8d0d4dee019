"""Match runs from the admin: upload -> django-q2 task (sync) -> review page, export; safe zips."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from similarity.models import MatchRun
from similarity.services.builds.runs import index_build_run
from similarity.services.matching.photos import supplier_thumbnail_name
from similarity.services.matching.runs import match_run_create, match_run_report_path
from similarity.services.matching.sources import MatchSourceError, zip_extract_safe
from tests.similarity.helpers import make_catalog
from tests.similarity.test_matching import near_copy, unrelated

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog() -> list:
    articles = make_catalog(12, size=160)
    index_build_run(model="classic", progress=False)
    return articles


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def upload(admin_client, name: str, data: bytes, callbacks) -> MatchRun:
    with callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:similarity_matchrun_add"),
            {"upload": SimpleUploadedFile(name, data), "k": 3},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    run = MatchRun.objects.get()
    assert response["Location"] == reverse("admin:similarity_matchrun_review", args=[run.pk])
    return run


def test_zip_upload_runs_as_a_task_and_the_review_page_lists_it(
    admin_client, catalog, settings, django_capture_on_commit_callbacks
):
    data = zip_bytes({"shoes/copy-3.jpg": near_copy(3), "noise.jpg": unrelated(2),
                      "broken.jpg": b"not an image", "readme.txt": b"ignored"})
    run = upload(admin_client, "supplier.zip", data, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == MatchRun.Status.SUCCEEDED, run.error
    assert (run.duplicate_count, run.similar_count, run.new_count, run.error_count) == (
        1, 0, 1, 1)
    assert run.created_by == "admin" and run.model == "classic" and run.task_id
    assert match_run_report_path(run=run).is_file()
    thumbnail = Path(settings.MEDIA_ROOT) / "matching" / str(run.pk) / supplier_thumbnail_name(
        "shoes/copy-3")
    assert thumbnail.is_file()

    review = reverse("admin:similarity_matchrun_review", args=[run.pk])
    page = admin_client.get(review).content.decode()
    assert page.count('class="match-row"') == 3
    assert f"matching/{run.pk}/{supplier_thumbnail_name('shoes/copy-3')}" in page
    copy_of = catalog[3]
    assert reverse("admin:catalog_article_change", args=[copy_of.pk]) in page
    assert copy_of.image.url in page

    duplicates = admin_client.get(review, {"verdict": "duplicate"}).content.decode()
    assert duplicates.count('class="match-row"') == 1 and "shoes/copy-3" in duplicates
    assert "noise" not in duplicates.split('id="match-results"')[1]

    export = admin_client.get(review, {"verdict": "new", "export": "csv"})
    assert export["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][:3] == ["supplier_ref", "verdict", "match_1"]
    assert [row[:2] for row in rows[1:]] == [["noise", "new"]]

    changelist = admin_client.get(reverse("admin:similarity_matchrun_changelist"))
    assert "1 / 0 / 1 / 1" in changelist.content.decode()
    detail = admin_client.get(reverse("admin:similarity_matchrun_change", args=[run.pk]))
    assert detail.status_code == 200 and b'name="status"' not in detail.content  # read-only

    response = admin_client.post(reverse("admin:similarity_matchrun_delete", args=[run.pk]),
                                 {"post": "yes"})
    assert response.status_code == 302 and not MatchRun.objects.exists()
    assert not thumbnail.exists() and not match_run_report_path(run=run).exists()


def test_feed_upload_keeps_extra_columns(
    admin_client, catalog, loopback, django_capture_on_commit_callbacks
):
    url = loopback.add("/p.jpg", near_copy(7))
    data = f"supplier_ref,image_url,price\nP-7,{url},12.50\nGONE,{loopback.url('/x')},1\n"
    run = upload(admin_client, "feed.csv", data.encode(), django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == MatchRun.Status.SUCCEEDED
    assert (run.duplicate_count, run.error_count) == (1, 1)
    export = admin_client.get(reverse("admin:similarity_matchrun_review", args=[run.pk]),
                              {"export": "csv"})
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][-1] == "price" and rows[1][0] == "P-7" and rows[1][-1] == "12.50"
    assert rows[1][2] == catalog[7].article_id


def test_wrong_upload_type_is_refused_on_the_form(admin_client, catalog):
    response = admin_client.post(reverse("admin:similarity_matchrun_add"),
                                 {"upload": SimpleUploadedFile("x.pdf", b"%PDF"), "k": 5})
    assert response.status_code == 200
    assert "upload a supplier feed" in response.content.decode()
    assert not MatchRun.objects.exists()


def test_a_zip_that_climbs_out_fails_the_run_and_writes_nothing_outside(
    admin_client, catalog, settings, tmp_path, django_capture_on_commit_callbacks
):
    data = zip_bytes({"ok.jpg": near_copy(1), "../../escaped.jpg": near_copy(2)})
    run = upload(admin_client, "evil.zip", data, django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert run.status == MatchRun.Status.FAILED
    assert "'../../escaped.jpg' would be written outside the folder" in run.error
    assert not list(Path(settings.DATA_DIR).rglob("escaped.jpg"))
    assert not (Path(settings.DATA_DIR) / "matching" / str(run.pk) / "photos").exists()
    page = admin_client.get(reverse("admin:similarity_matchrun_review", args=[run.pk]))
    assert "would be written outside" in page.content.decode()


@pytest.mark.parametrize("name", ["/etc/evil.jpg", "a/../../evil.jpg", "C:/evil.jpg"])
def test_zip_entries_outside_the_folder_are_refused(tmp_path, name):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({name: b"x"}))
    with pytest.raises(MatchSourceError, match="outside the folder"):
        zip_extract_safe(archive=archive, destination=tmp_path / "out", max_files=10,
                         max_bytes=1000)
    assert not (tmp_path / "out").exists()


def test_zip_symlinks_and_limits_are_refused(tmp_path):
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = 0o120777 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(link, "/etc/passwd")
    archive = tmp_path / "a.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(MatchSourceError, match="symbolic link"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                         max_bytes=1000)

    archive.write_bytes(zip_bytes({f"{i}.jpg": b"x" for i in range(4)}))
    with pytest.raises(MatchSourceError, match="more than 3 files"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=3,
                         max_bytes=1000)

    archive.write_bytes(zip_bytes({"a.jpg": b"x" * 600, "b.jpg": b"y" * 600}))
    with pytest.raises(MatchSourceError, match="more than 1000 bytes"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                         max_bytes=1000)
    assert not (tmp_path / "o").exists()

    archive.write_bytes(b"PK not really")
    with pytest.raises(MatchSourceError, match="not a readable zip"):
        zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                         max_bytes=1000)

    archive.write_bytes(zip_bytes({"dir/a.jpg": b"x", "b.jpg": b"y"}))
    assert zip_extract_safe(archive=archive, destination=tmp_path / "o", max_files=10,
                            max_bytes=1000) == 2
    assert (tmp_path / "o" / "dir" / "a.jpg").read_bytes() == b"x"


def test_run_without_an_index_fails_with_the_reason(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = match_run_create(upload=SimpleUploadedFile("f.csv", b"supplier_ref,image_url\n"))
    run.refresh_from_db()
    assert run.status == MatchRun.Status.FAILED and "no index has been built" in run.error
