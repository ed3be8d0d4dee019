"""Similarity endpoints against a real index: by article, by upload, by text; their errors."""

from __future__ import annotations

import io

import pytest
from django.test import override_settings
from PIL import Image

from catalog.models import Article
from similarity.conf import similarity_settings
from similarity.services.builds.runs import index_build_run
from tests.similarity.api.conftest import png_bytes
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db

RESULT_KEYS = {
    "article_id", "title", "category", "image_url", "image", "distance", "score", "matched_image",
}


def lookalike(**values) -> override_settings:
    from django.conf import settings

    return override_settings(LOOKALIKE={**settings.LOOKALIKE, **values})


def test_similar_to_article_puts_itself_first(client, catalog, django_assert_num_queries):
    with django_assert_num_queries(2):  # article + its embedding, the k results: no N+1
        response = client.get("/api/articles/S0004/similar/", {"k": 10})
    assert response.status_code == 200
    body = response.json()
    assert body["article_id"] == "S0004" and body["model"] == "classic" and body["index_build"]
    results = body["results"]
    assert len(results) == 10 and set(results[0]) == RESULT_KEYS
    assert results[0]["article_id"] == "S0004" and results[0]["distance"] == pytest.approx(0)
    assert results[0]["score"] == pytest.approx(1)
    distances = [row["distance"] for row in results]
    assert distances == sorted(distances)


def test_similar_exclude_self_and_category(client, catalog, django_assert_num_queries):
    body = client.get("/api/articles/S0004/similar/?k=5&exclude_self=true").json()
    assert len(body["results"]) == 5
    assert "S0004" not in [row["article_id"] for row in body["results"]]
    category = catalog[1].category
    with django_assert_num_queries(3):  # + the category's ids
        body = client.get(f"/api/articles/S0004/similar/?k=10&category={category}").json()
    assert body["results"] and {row["category"] for row in body["results"]} == {category}


def test_default_k_and_query_count_do_not_grow_with_k(client, catalog, django_assert_num_queries):
    assert len(client.get("/api/articles/S0000/similar/").json()["results"]) == 10
    # An empty field means "not given" (DRF's HTML-form convention), so the default applies.
    assert len(client.get("/api/articles/S0000/similar/?k=").json()["results"]) == 10
    with django_assert_num_queries(2):
        assert len(client.get("/api/articles/S0000/similar/?k=15").json()["results"]) == 15


@pytest.mark.parametrize("k", ["0", "-1", "x", "101", "1.5", "1e3"])
def test_bad_k_is_400(client, catalog, k):
    response = client.get("/api/articles/S0000/similar/", {"k": k})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    max_k = similarity_settings().max_k
    assert f"k must be an integer between 1 and {max_k}; got {k!r}" in error["message"]


def test_k_above_a_configured_max_is_400(client, catalog):
    with lookalike(MAX_K=5):
        assert client.get("/api/articles/S0000/similar/?k=6").status_code == 400
        assert client.get("/api/articles/S0000/similar/?k=5").status_code == 200


def test_unknown_article_is_404(client, catalog):
    response = client.get("/api/articles/NOPE/similar/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "article_not_found"


def test_failed_and_unindexed_articles_are_409_with_the_reason(
    client, catalog, django_user_model
):
    Article.objects.create(
        article_id="FAILED",
        image_url="http://127.0.0.1:9/f.jpg",
        download_status=Article.DownloadStatus.FAILED,
        download_error="HTTP 404 Not Found",
    )
    response = client.get("/api/articles/FAILED/similar/")
    assert response.status_code == 409
    error = response.json()["error"]
    # Anonymous clients never read the download error itself (hosts, ports...).
    assert error["code"] == "article_not_indexed" and "HTTP 404" not in str(error)
    assert "image failed to download (download failed)" in error["message"]
    client.force_authenticate(django_user_model.objects.create_user("staff", is_staff=True))
    error = client.get("/api/articles/FAILED/similar/").json()["error"]
    assert "HTTP 404 Not Found" in error["reason"] and "HTTP 404 Not Found" in error["message"]
    client.force_authenticate(None)

    make_catalog(1, start=30)  # downloaded after the build
    error = client.get("/api/articles/S0030/similar/").json()["error"]
    assert "after the last index build" in error["reason"]
    Article.objects.create(article_id="PENDING", image_url="http://127.0.0.1:9/p.jpg")
    error = client.get("/api/articles/PENDING/similar/").json()["error"]
    assert "not been downloaded yet" in error["reason"]


def test_no_index_is_503(client, db, photo_png):
    make_catalog(2)
    for response in (
        client.get("/api/articles/S0000/similar/"),
        client.post("/api/similar/", {"image": io.BytesIO(photo_png)}, format="multipart"),
        client.get("/api/similar/?text=bag"),
    ):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "index_not_ready"


def upload(client, data: bytes, **fields):
    file = io.BytesIO(data)
    file.name = "query.png"
    return client.post("/api/similar/", {"image": file, **fields}, format="multipart")


def test_upload_finds_the_source_product(client, catalog, photo_png, django_assert_num_queries):
    with django_assert_num_queries(1):  # the hydration of the results
        response = upload(client, photo_png, k=3)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["article_id"] is None and body["model"] == "classic"
    assert [set(row) for row in body["results"]] == [RESULT_KEYS] * 3
    assert body["results"][0]["article_id"] == "S0007"
    category = catalog[2].category
    body = upload(client, photo_png, k=10, category=category).json()
    assert {row["category"] for row in body["results"]} == {category}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html><body>nope</body></html>", "not an image (HTML page)"),
        (b"\x00" * 100, "not an image"),
        (b"", "empty body"),
    ],
)
def test_upload_that_is_not_an_image_is_400(client, catalog, data, message):
    response = upload(client, data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and message in error["message"]


def test_truncated_upload_is_400(client, catalog):
    buffer = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(buffer, "JPEG", quality=95)
    response = upload(client, buffer.getvalue()[:4000])
    assert response.status_code == 400
    assert "truncated image" in response.json()["error"]["message"]


def test_decompression_bomb_is_400(client, catalog):
    bomb = png_bytes(Image.new("1", (20_000, 20_000)))  # 400 megapixels in a few KB
    assert len(bomb) < 200_000
    response = upload(client, bomb)
    assert response.status_code == 400
    assert "decompression bomb: 400000000 pixels" in response.json()["error"]["message"]
    with lookalike(UPLOAD_MAX_PIXELS=100 * 100):
        response = upload(client, png_bytes(Image.new("RGB", (101, 100))))
    assert response.status_code == 400
    assert "10100 pixels > limit 10000" in response.json()["error"]["message"]


def test_upload_over_the_limit_is_413_before_reading_the_body(client, catalog, photo_png):
    # The claimed length alone decides: the (small) body is never parsed.
    response = client.post(
        "/api/similar/",
        {"image": io.BytesIO(photo_png)},
        format="multipart",
        CONTENT_LENGTH=str(50 * 1024 * 1024),
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "upload_too_large"
    assert "52428800 bytes is larger than the limit of 10485760 bytes" in error["message"]


def test_file_over_the_limit_is_413(client, catalog, photo_png):
    # Body within the multipart allowance, file itself over the limit.
    with lookalike(UPLOAD_MAX_BYTES=len(photo_png) - 1):
        response = upload(client, photo_png)
    assert response.status_code == 413
    with lookalike(UPLOAD_MAX_BYTES=len(photo_png)):
        assert upload(client, photo_png).status_code == 200


def test_missing_query_is_400(client, catalog):
    response = client.post("/api/similar/", {"k": 3}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_query"
    assert error["message"] == ("POST one of: the image file as multipart field 'image', "
                                "'image_url' or 'vector' (fields received: k)")
    for response in (
        client.get("/api/similar/"),
        client.get("/api/similar/?text=%20%20"),
    ):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_query" and "text query" in error["message"]


def test_bad_k_on_upload_is_400(client, catalog, photo_png):
    response = upload(client, photo_png, k="many")
    assert response.status_code == 400 and "k must be an integer" in response.json()["error"][
        "message"
    ]


def test_text_query_on_an_image_only_model_is_400(client, catalog):
    response = client.get("/api/similar/", {"text": "red leather handbag"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_query" and "'classic' cannot embed text" in error["message"]


def test_text_query_with_clip(client, tiny_clip, django_assert_num_queries):
    make_catalog(6)
    index_build_run(model=str(tiny_clip), progress=False)
    with django_assert_num_queries(1):
        response = client.get("/api/similar/", {"text": "red leather handbag", "k": 4})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["article_id"] is None and body["model"] == str(tiny_clip)
    assert len(body["results"]) == 4
    distances = [row["distance"] for row in body["results"]]
    assert distances == sorted(distances)
    assert client.get("/api/index/").json()["current"]["supports_text"] is True
