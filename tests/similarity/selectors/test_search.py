"""The search service against a real built index: by article, by image, by text; errors."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest

from catalog.models import Article
from demo.sample_images import product_image
from similarity.errors import ArticleNotFound, ArticleNotIndexed, IndexNotReady, InvalidQuery
from similarity.selectors.search import (
    similar_to_article,
    similar_to_image,
    similar_to_text,
)
from similarity.selectors.store import get_store
from similarity.selectors.validation import validate_k
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog, store_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog() -> list[Article]:
    articles = make_catalog(15)
    index_build_run(model="classic", progress=False)
    return articles


def test_every_article_comes_first_at_distance_zero(catalog):
    for article in catalog:
        result = similar_to_article(article_id=article.article_id, k=5)
        assert result.results[0].article_id == article.article_id
        assert result.results[0].distance < 1e-5
        assert result.results[0].score == pytest.approx(1.0)
        distances = [row.distance for row in result.results]
        assert distances == sorted(distances) and len(distances) == 5
        assert result.model == "classic" and result.index_build


def test_exact_duplicate_does_not_displace_the_article_itself(catalog):
    twin = Article.objects.create(
        article_id="TWIN", image_url="http://127.0.0.1:9/t.jpg", category=catalog[3].category
    )
    store_image(twin, product_image(3, size=96))
    index_build_run(model="classic", progress=False)
    for article_id in (catalog[3].article_id, "TWIN"):
        result = similar_to_article(article_id=article_id, k=3)
        assert result.results[0].article_id == article_id
        assert result.results[1].distance < 1e-5  # the twin


def test_exclude_self_and_category_filter_still_return_k(catalog):
    article = catalog[0]
    result = similar_to_article(article_id=article.article_id, k=4, exclude_self=True)
    assert article.article_id not in [row.article_id for row in result.results]
    assert len(result.results) == 4
    same = Article.objects.filter(category=article.category).count()  # 3 of 15
    result = similar_to_article(article_id=article.article_id, k=10, category=article.category)
    assert len(result.results) == same
    assert {row.category for row in result.results} == {article.category}
    other = next(a for a in catalog if a.category != article.category)
    result = similar_to_article(article_id=article.article_id, k=2, category=other.category)
    assert article.article_id not in [row.article_id for row in result.results]
    assert len(result.results) == 2


def test_similar_to_image_finds_the_source_product(catalog):
    image = product_image(7, size=160)  # same product, another size
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    result = similar_to_image(image=buffer.getvalue(), k=3)
    assert result.results[0].article_id == catalog[7].article_id


def test_bad_uploads_and_k_are_invalid(catalog):
    with pytest.raises(InvalidQuery, match="image: not an image \\(HTML page\\)"):
        similar_to_image(image=b"<html>nope</html>", k=3)
    for bad in (0, -1, "x", 10_000, True):
        with pytest.raises(InvalidQuery, match="k must be an integer"):
            validate_k(bad)
    assert validate_k("7") == 7


def test_text_query_on_image_only_model_is_refused(catalog):
    with pytest.raises(InvalidQuery, match="cannot embed text"):
        similar_to_text(text="red bag", k=3)


def test_unknown_and_unindexed_articles(catalog):
    with pytest.raises(ArticleNotFound):
        similar_to_article(article_id="NOPE")
    failed = Article.objects.create(
        article_id="FAILED",
        image_url="http://127.0.0.1:9/f.jpg",
        download_status=Article.DownloadStatus.FAILED,
        download_error="HTTP 404 Not Found",
    )
    with pytest.raises(ArticleNotIndexed, match="HTTP 404"):
        similar_to_article(article_id=failed.article_id)
    pending = Article.objects.create(article_id="PENDING", image_url="http://127.0.0.1:9/p.jpg")
    with pytest.raises(ArticleNotIndexed, match="not been downloaded"):
        similar_to_article(article_id=pending.article_id)


def test_no_index_yet_is_not_ready():
    make_catalog(2)
    with pytest.raises(IndexNotReady):
        similar_to_article(article_id="S0000")


def test_store_reloads_when_a_new_build_becomes_current(catalog):
    first = get_store().get()
    assert get_store().get() is first  # cached
    make_catalog(2, start=40)
    index_build_run(model="classic", progress=False)
    second = get_store().get()
    assert second.name != first.name and second.index.ntotal == 17
    assert similar_to_article(article_id="S0040", k=1).results[0].article_id == "S0040"


@pytest.mark.django_db(transaction=True)
def test_concurrent_searches_are_consistent():
    # Committed data (transaction=True), so the threads' own connections see it.
    catalog = make_catalog(15)
    index_build_run(model="classic", progress=False)

    def ids(article_id: str) -> list[str]:
        return [r.article_id for r in similar_to_article(article_id=article_id, k=5).results]

    expected = {a.article_id: ids(a.article_id) for a in catalog}
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(30):
                article = catalog[(i + offset) % len(catalog)]
                assert ids(article.article_id) == expected[article.article_id]
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    from django.db import connections

    def run(offset: int) -> None:
        try:
            worker(offset)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert np.isfinite(similar_to_article(article_id="S0000", k=2).results[1].distance)


def test_queries_refuse_an_embedder_whose_weights_changed_since_the_build(tmp_path):
    import os

    from similarity.embedders import embedders_clear
    from tests.similarity.engine.tiny_models import build_tiny_clip

    os.environ["HF_HUB_OFFLINE"] = "1"
    model = build_tiny_clip(tmp_path / "clip", seed=1)
    make_catalog(4)
    index_build_run(model=str(model), progress=False)
    assert similar_to_text(text="red bag", k=2).results
    build_tiny_clip(tmp_path / "clip", seed=2)  # the weights behind the same path change
    embedders_clear()  # explicit invalidation: the next query loads the new weights
    with pytest.raises(IndexNotReady, match="rebuild the index"):
        similar_to_text(text="red bag", k=2)
    index_build_run(model=str(model), progress=False)
    assert similar_to_text(text="red bag", k=2).results


def test_each_request_thread_searches_on_one_faiss_thread():
    """OpenMP's thread count is per thread: every request thread pins its own to 1."""
    import faiss
    from django.core.signals import request_started

    import similarity.selectors.store  # noqa: F401  (connects the receiver)

    seen = []

    def request_thread():
        before = faiss.omp_get_max_threads()
        request_started.send(sender=None, environ={})
        seen.extend([before, faiss.omp_get_max_threads()])

    thread = threading.Thread(target=request_thread)
    thread.start()
    thread.join()
    assert seen == [os.cpu_count() or 1, 1]
