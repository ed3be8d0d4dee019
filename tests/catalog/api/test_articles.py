"""Article list and detail endpoints."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Article

pytestmark = pytest.mark.django_db


def test_list_is_paginated_and_filtered(client, catalog, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):  # count + page
        response = client.get("/api/articles/", {"limit": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 15 and len(body["results"]) == 5 and body["next"]
    first = body["results"][0]
    assert first["article_id"] == "S0000"
    assert first["image"].startswith("http://testserver/media/images/")
    assert first["url"] == "http://testserver/api/articles/S0000/"

    category = catalog[0].category
    body = client.get("/api/articles/", {"category": category}).json()
    assert body["count"] == Article.objects.filter(category=category).count() > 0
    assert {row["category"] for row in body["results"]} == {category}

    Article.objects.create(article_id="P-1", image_url="http://127.0.0.1:9/p.jpg")
    body = client.get("/api/articles/", {"status": "pending"}).json()
    assert [row["article_id"] for row in body["results"]] == ["P-1"]


def test_list_rejects_unknown_status(client, db):
    response = client.get("/api/articles/", {"status": "lost"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and "status" in error["message"]
    assert "lost" in error["message"]


def test_detail_with_odd_ids(client, catalog):
    for article_id in ("A-1.b_c", "with/slash", "similar"):
        Article.objects.create(article_id=article_id, image_url="http://127.0.0.1:9/x.jpg")
        url = reverse("api:article-detail", args=[article_id])
        body = client.get(url).json()
        assert body["article_id"] == article_id
        assert body["indexed"] is False and body["image"] is None
        assert body["similar_url"].endswith(f"/api/articles/{article_id}/similar/")
    body = client.get("/api/articles/S0003/").json()
    assert body["indexed"] is True and body["download_status"] == "downloaded"


@pytest.mark.parametrize("article_id", ["line\nbreak", "tab\there", "del\x7f", "c1\x85"])
def test_ids_with_control_characters_already_stored_do_not_break_the_list(client, db, article_id):
    """The import refuses such ids now; rows stored before must not turn the list into a 500."""
    Article.objects.create(article_id=article_id, image_url="http://127.0.0.1:9/x.jpg")
    Article.objects.create(article_id="OK", image_url="http://127.0.0.1:9/y.jpg")
    response = client.get("/api/articles/")
    assert response.status_code == 200
    urls = {row["article_id"]: row["url"] for row in response.json()["results"]}
    assert urls == {article_id: None, "OK": "http://testserver/api/articles/OK/"}


@pytest.mark.parametrize(
    "article_id", [".", "..", "a/../b", "a/./b", "X1/similar", "X1/duplicates"]
)
def test_ids_that_no_url_routes_back_get_no_url(client, db, article_id):
    Article.objects.create(article_id=article_id, image_url="http://127.0.0.1:9/x.jpg")
    rows = client.get("/api/articles/").json()["results"]
    assert [(row["article_id"], row["url"]) for row in rows] == [(article_id, None)]


def test_list_urls_are_quoted_and_lead_back_to_the_article(client, catalog):
    for article_id in ("with/slash", "q?x#y", "100%", "sp ace", "ünï"):
        Article.objects.create(article_id=article_id, image_url="http://127.0.0.1:9/x.jpg")
    for row in client.get("/api/articles/", {"limit": 500}).json()["results"]:
        detail = client.get(row["url"])
        assert detail.status_code == 200, row
        assert detail.json()["article_id"] == row["article_id"]
        similar = client.get(detail.json()["similar_url"]).json()
        # Indexed articles answer their neighbors, the new ones "not indexed": same id.
        answered = similar.get("article_id") or similar["error"]["article_id"]
        assert answered == row["article_id"]


def test_detail_unknown_is_404(client, db):
    response = client.get("/api/articles/NOPE/")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "article_not_found",
            "message": "unknown article 'NOPE'",
            "article_id": "NOPE",
        }
    }


def test_detail_without_index_says_null(client, db):
    Article.objects.create(article_id="X", image_url="http://127.0.0.1:9/x.jpg")
    assert client.get("/api/articles/X/").json()["indexed"] is None


@pytest.mark.parametrize("path", ["/api/articles/{}/", "/api/articles/{}/similar/"])
@pytest.mark.parametrize("article_id", ["%00", "A%00B", "x" * 300])
def test_invalid_ids_are_404_with_the_json_error(client, catalog, path, article_id):
    """A NUL makes PostgreSQL raise on a text comparison: no query is made for such ids."""
    response = client.get(path.format(article_id))
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "article_not_found"


def test_download_errors_are_detailed_for_signed_in_users_only(client, db, django_user_model):
    Article.objects.create(
        article_id="F", image_url="http://127.0.0.1:9/f.jpg",
        download_status=Article.DownloadStatus.FAILED,
        download_error="connection failed: [Errno 111] Connection refused (10.0.0.5:6379)",
        refresh_error="HTTP 503 Service Unavailable",
    )
    body = client.get("/api/articles/F/").json()
    assert (body["download_error"], body["refresh_error"]) == ("download failed",) * 2

    client.force_authenticate(django_user_model.objects.create_user("shop", is_staff=True))
    body = client.get("/api/articles/F/").json()
    assert body["download_error"].endswith("(10.0.0.5:6379)")
    assert body["refresh_error"] == "HTTP 503 Service Unavailable"


def test_no_error_reads_empty(client, db):
    Article.objects.create(article_id="OK", image_url="http://127.0.0.1:9/ok.jpg")
    body = client.get("/api/articles/OK/").json()
    assert (body["download_error"], body["refresh_error"]) == ("", "")
