"""verify=true on /api/similar/ (upload, image_url) and on the batch endpoint: verified
articles first, a verdict, evidence per result; refused where there is no photo."""

from __future__ import annotations

import io

import pytest

from catalog.models import Article
from similarity.services.builds.runs import index_build_run
from tests.similarity.api.conftest import png_bytes
from tests.similarity.helpers import store_image
from tests.similarity.verification_pictures import pil, shop_photo, textured

pytestmark = pytest.mark.django_db


@pytest.fixture
def boxes(db) -> list[Article]:
    """Six articles with textured packshots, indexed with the classic embedder."""
    articles = []
    for seed in range(6):
        article = Article.objects.create(article_id=f"T{seed}", title=f"Box {seed}",
                                         image_url=f"http://127.0.0.1:9/T{seed}.png")
        articles.append(store_image(article, pil(textured(seed))))
    index_build_run(model="classic", progress=False)
    return articles


def photo_of(seed: int) -> bytes:
    return png_bytes(pil(shop_photo(textured(seed), seed)))


def post_photo(client, data: bytes, **fields):
    file = io.BytesIO(data)
    file.name = "photo.png"
    return client.post("/api/similar/", {"image": file, **fields}, format="multipart")


def test_verified_upload_has_a_verdict_and_evidence(client, boxes):
    body = post_photo(client, photo_of(3), k=3, verify="true").json()
    assert body["verdict"] == "same"
    first = body["results"][0]
    assert first["article_id"] == "T3" and first["inliers"] >= 30
    assert 0 < first["inlier_ratio"] <= 1
    assert all(row["inliers"] is None or row["inliers"] < 15 for row in body["results"][1:])
    plain = post_photo(client, photo_of(3), k=3).json()
    assert "verdict" not in plain and "inliers" not in plain["results"][0]


def test_verify_needs_a_photo_and_excludes_collapse(client, boxes):
    vector = client.post("/api/similar/", {"vector": [0.1] * 8, "verify": True}, format="json")
    assert vector.status_code == 400 and "verify needs a photo" in vector.json()["error"][
        "message"]
    both = post_photo(client, photo_of(1), verify="true", collapse="true")
    assert both.status_code == 400 and "collapse" in both.json()["error"]["message"]


def test_verified_image_url_and_batch(client, boxes, loopback, settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": True}
    url = loopback.add("/photo.png", photo_of(2))
    single = client.post("/api/similar/", {"image_url": url, "k": 2, "verify": True},
                         format="json")
    assert single.status_code == 200, single.json()
    assert single.json()["verdict"] == "same" and single.json()["results"][0]["article_id"] == "T2"
    batch = client.post("/api/similar/batch/", {"items": [{"image_url": url},
                                                          {"article_id": "T4"}],
                                                "k": 2, "verify": True}, format="json")
    photo, article = batch.json()["results"]
    assert photo["verdict"] == "same" and photo["results"][0]["inliers"] >= 30
    assert "verdict" not in article and len(article["results"]) == 2
