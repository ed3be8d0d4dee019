"""Queries from outside: client vectors, image URLs, batches, collapse, the published model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.contrib.auth.models import User

import similarity.engine.index as engine_index
from catalog.models import Article
from demo.sample_images import product_image
from similarity.models import Embedding
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog, store_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def allow_private(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": True}


def stored_vector(article_id: str) -> np.ndarray:
    row = Embedding.objects.get(article__article_id=article_id)
    return np.frombuffer(bytes(row.vector), dtype="<f4")


def jpeg(seed: int, size: int = 150) -> bytes:
    buffer = io.BytesIO()
    product_image(seed, size=size).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_index_publishes_model_identity_dimension_and_preprocessing(client, catalog):
    current = client.get("/api/index/").json()["current"]
    assert current["model"] == "classic" and current["model_identity"] == "classic@v2"
    assert current["dimension"] == len(stored_vector("S0003"))
    assert current["preprocessing"]["client_computable"] is True
    assert "lookalike_core.classic" in current["preprocessing"]["description"]


def test_vector_query_as_json_and_form_is_normalised_server_side(client, catalog):
    vector = stored_vector("S0003")
    for body, fmt in (
        ({"vector": (vector * 7).tolist(), "k": 3, "model": "classic"}, "json"),
        ({"vector": ",".join(str(v) for v in vector * 0.5), "k": 3}, "multipart"),
        ({"vector": str(vector.tolist()), "k": 3, "model": "classic@v2"}, "multipart"),
    ):
        response = client.post("/api/similar/", body, format=fmt)
        assert response.status_code == 200, response.json()
        first = response.json()["results"][0]
        assert first["article_id"] == "S0003" and first["distance"] < 1e-5
        assert len(response.json()["results"]) == 3


@pytest.mark.parametrize(
    ("vector", "model", "message"),
    [
        ([0.1, 0.2], None, "has 2 values but the index's model 'classic' has dimension"),
        ("wrong", None, "vector must be a list of numbers"),
        (["a", 1], None, "vector must be a list of numbers"),
        ("zeros", None, "all zeros"),
        ("huge", None, "is not a finite number"),
        ("bigint", None, "is not a finite number"),  # a JSON integer past float's range
        ("stored", "clip-ViT-B-32", "was computed with model 'clip-ViT-B-32'"),
    ],
)
def test_bad_vectors_are_clear_400s(client, catalog, vector, model, message):
    dimension = len(stored_vector("S0001"))
    vector = {
        "zeros": [0.0] * dimension,
        "huge": [1e39] + [0.0] * (dimension - 1),
        "bigint": [10**400] + [0] * (dimension - 1),
        "stored": stored_vector("S0001").tolist(),
    }.get(vector, vector) if isinstance(vector, str) else vector
    body = {"vector": vector, **({"model": model} if model else {})}
    response = client.post("/api/similar/", body, format="json")
    assert response.status_code == 400, response.json()
    assert message in response.json()["error"]["message"]


def test_a_batch_item_with_an_integer_past_floats_range_errs_alone(client, catalog):
    dimension = len(stored_vector("S0001"))
    items = [{"vector": [-(10**400)] + [0] * (dimension - 1)}, {"article_id": "S0001"}]
    response = client.post("/api/similar/batch/", {"items": items}, format="json")
    assert response.status_code == 200, response.content
    first, second = response.json()["results"]
    assert first["status"] == 400 and "is not a finite number" in first["error"]["message"]
    assert second["status"] == 200


def test_two_query_kinds_and_non_object_bodies_are_400(client, catalog):
    vector = stored_vector("S0001").tolist()
    both = client.post("/api/similar/", {"vector": vector, "image_url": "http://a.example/x.jpg"},
                       format="json")
    assert both.status_code == 400
    assert "only one of" in both.json()["error"]["message"]
    for body in ([1, 2], "text", 3):
        response = client.post("/api/similar/", body, format="json")
        assert response.status_code == 400, body


def test_image_url_query_fetches_through_the_guard(client, catalog, loopback, allow_private):
    url = loopback.add("/photo.jpg", jpeg(5))
    response = client.post("/api/similar/", {"image_url": url, "k": 2}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["results"][0]["article_id"] == "S0005"
    form = client.post("/api/similar/", {"image_url": url, "k": 2}, format="multipart")
    assert form.json()["results"][0]["article_id"] == "S0005"
    missing = client.post("/api/similar/", {"image_url": loopback.url("/nope.jpg")},
                          format="json")
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "image_url_failed"


def test_private_image_urls_are_refused_without_leaking_the_address(client, catalog, loopback,
                                                                    settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": False}
    url = loopback.add("/photo.jpg", jpeg(5))
    response = client.post("/api/similar/", {"image_url": url}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "image_url_failed" and "download failed" in error["message"]
    assert "127.0.0.1" not in error["message"].replace(url, "")
    assert loopback.hits.get("/photo.jpg", 0) == 0
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_authenticate(staff)
    detailed = client.post("/api/similar/", {"image_url": url}, format="json").json()["error"]
    assert "refused" in detailed["message"] and "loopback" in detailed["message"]


def test_batch_answers_each_item_with_one_faiss_call(client, catalog, loopback, allow_private,
                                                     monkeypatch):
    calls = []
    real = engine_index.knn_query
    monkeypatch.setattr(engine_index, "knn_query",
                        lambda *a, **kw: calls.append(len(a[1])) or real(*a, **kw))
    url = loopback.add("/p9.jpg", jpeg(9))
    items = [
        {"article_id": "S0002"},
        {"vector": stored_vector("S0004").tolist(), "model": "classic"},
        {"image_url": url},
        {"article_id": "nope"},
        {"text": "a red bag"},
        {"vector": [1.0, 2.0]},
        {},
        "not an object",
        {"article_id": "S0001", "text": "two kinds"},
        {"image_url": loopback.url("/missing.jpg")},
    ]
    response = client.post("/api/similar/batch/", {"items": items, "k": 3}, format="json")
    assert response.status_code == 200, response.json()
    answers = response.json()["results"]
    assert len(answers) == len(items)
    assert [a["status"] for a in answers] == [200, 200, 200, 404, 400, 400, 400, 400, 400, 400]
    assert answers[0]["article_id"] == "S0002"
    assert answers[0]["results"][0]["article_id"] == "S0002"
    assert answers[1]["results"][0]["article_id"] == "S0004"
    assert answers[2]["results"][0]["article_id"] == "S0009"
    assert all(len(a["results"]) == 3 for a in answers[:3])
    assert answers[3]["error"]["code"] == "article_not_found"
    assert "cannot embed text" in answers[4]["error"]["message"]
    assert answers[6]["error"]["code"] == "invalid_input"
    assert answers[9]["error"]["code"] == "image_url_failed"
    assert calls == [3]  # one search for the three searchable items


def test_batch_limits_and_throttle(client, catalog, loopback, allow_private, settings):
    too_many = client.post("/api/similar/batch/", {"items": [{"article_id": "S0001"}] * 65},
                           format="json")
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "invalid_input"
    assert client.post("/api/similar/batch/", {"items": []}, format="json").status_code == 400
    settings.LOOKALIKE = {**settings.LOOKALIKE, "UPLOAD_THROTTLE": "2/min"}
    url = loopback.add("/p1.jpg", jpeg(1))
    items = [{"image_url": url}] * 3 + [{"article_id": "S0001"}]
    answers = client.post("/api/similar/batch/", {"items": items}, format="json").json()["results"]
    assert [a["status"] for a in answers] == [200, 200, 429, 200]
    assert answers[2]["error"]["code"] == "throttled"


@pytest.fixture
def copies(db) -> list[Article]:
    """12 articles; S0000 and S0003 each have two near-copies (other sizes, recompressed)."""
    articles = make_catalog(12)
    for source, names in ((0, ("D0a", "D0b")), (3, ("D3a", "D3b"))):
        for size, name in zip((80, 120), names, strict=True):
            twin = Article.objects.create(article_id=name, category=articles[source].category,
                                          image_url=f"http://127.0.0.1:9/{name}.jpg")
            store_image(twin, product_image(source, size=size), quality=70)
    index_build_run(model="classic", progress=False)
    return articles


def test_collapse_folds_copies_and_still_answers_k(client, copies):
    plain = client.get("/api/articles/S0000/similar/?k=6").json()["results"]
    assert {r["article_id"] for r in plain[:3]} == {"S0000", "D0a", "D0b"}
    response = client.get("/api/articles/S0000/similar/?k=6&collapse=true")
    results = response.json()["results"]
    assert len(results) == 6
    assert results[0]["article_id"] == "S0000"
    assert {d["article_id"] for d in results[0]["duplicates"]} == {"D0a", "D0b"}
    shown = [r["article_id"] for r in results]
    folded = [d["article_id"] for r in results for d in r["duplicates"]]
    assert not set(shown) & set(folded) and len(set(folded)) == len(folded)
    assert "duplicates" not in plain[0]
    vector = stored_vector("S0003").tolist()
    by_vector = client.post("/api/similar/", {"vector": vector, "k": 4, "collapse": True},
                            format="json").json()["results"]
    assert by_vector[0]["article_id"] in {"S0003", "D3a", "D3b"}
    assert len(by_vector[0]["duplicates"]) == 2 and len(by_vector) == 4
    batch = client.post("/api/similar/batch/", {"items": [{"article_id": "S0003"}], "k": 4,
                                                "collapse": True}, format="json").json()
    assert batch["results"][0]["results"][0]["duplicates"]


def test_batch_bodies_over_djangos_memory_limit_are_4xx_not_500(client, catalog):
    items = [{"vector": [0.123456789012345] * 3000} for _ in range(64)]  # ~3.5 MB of JSON
    response = client.post("/api/similar/batch/", {"items": items}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    empty = client.post("/api/similar/batch/", content_type="application/json")
    assert empty.status_code == 400 and "'items'" in empty.json()["error"]["message"]


@pytest.mark.parametrize("index_type", ["flat", "IVF2,Flat"])
def test_collapse_reads_result_vectors_from_any_index(copies, index_type):
    from similarity.selectors.search import similar_to_article
    from similarity.selectors.store import get_store
    from similarity.selectors.vectors import index_vectors

    index_build_run(model="classic", index_type=index_type, full=True, progress=False)
    loaded = get_store().get()
    ids = loaded.ids[:5]
    expected = np.stack([
        np.frombuffer(bytes(Embedding.objects.get(article_id=int(pk)).vector), dtype="<f4")
        for pk in ids
    ])
    assert np.allclose(index_vectors(loaded, ids), expected, atol=1e-6)
    result = similar_to_article(article_id="S0000", k=4, collapse=True)
    assert result.results[0].article_id == "S0000"
    assert {d.article_id for d in result.results[0].duplicates} == {"D0a", "D0b"}
