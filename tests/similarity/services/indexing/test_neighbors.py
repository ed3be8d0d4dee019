"""Whole-catalog neighbors: batched search, CSV/JSONL export, category-only, stored table."""

from __future__ import annotations

import csv
import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from catalog.models import Article
from similarity.engine.index import knn_query
from similarity.models import SimilarArticle
from similarity.selectors.neighbors import neighbors_search, stored_neighbors
from similarity.selectors.store import get_store
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog() -> list[Article]:
    articles = make_catalog(30)
    index_build_run(model="classic", progress=False)
    return articles


def test_batched_search_equals_per_article_knn_without_self():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10, 210, dtype=np.int64)
    from similarity.engine.index import build_index

    index = build_index(vectors, ids)
    batches = [(ids[s : s + 64], vectors[s : s + 64]) for s in range(0, 200, 64)]
    batched = dict(neighbors_search(index, batches, 5))
    for row, pk in enumerate(ids.tolist()):
        single = knn_query(index, vectors[row], 5, exclude_ids=np.array([pk]))[0]
        assert batched[pk].ids.tolist() == single.ids.tolist()
        np.testing.assert_allclose(batched[pk].distances, single.distances, atol=1e-6)


def test_export_csv_matches_live_similar_and_excludes_self(catalog, tmp_path):
    from similarity.selectors.search import similar_to_article

    out = tmp_path / "n.csv"
    call_command("export_neighbors", "--k", "4", "--output", str(out), "--no-progress",
                 "--batch-size", "7", stderr=StringIO())
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 30 * 4
    by_article: dict[str, list[str]] = {}
    for row in rows:
        assert row["article_id"] != row["neighbor_id"]
        by_article.setdefault(row["article_id"], []).append(row["neighbor_id"])
    for article in catalog[:5]:
        live = similar_to_article(article_id=article.article_id, k=4, exclude_self=True)
        assert by_article[article.article_id] == [r.article_id for r in live.results]


def test_export_jsonl_and_category_only(catalog, tmp_path):
    out = tmp_path / "n.jsonl"
    call_command("export_neighbors", "--k", "3", "--output", str(out), "--category-only",
                 "--no-progress", stderr=StringIO())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 30
    category = dict(Article.objects.values_list("article_id", "category"))
    for record in records:
        assert len(record["neighbors"]) == 3
        assert all(category[n["article_id"]] == record["category"] for n in record["neighbors"])
        distances = [n["distance"] for n in record["neighbors"]]
        assert distances == sorted(distances)


def test_export_to_stdout_and_argument_errors(catalog):
    out = StringIO()
    call_command("export_neighbors", "--k", "2", "--no-progress", stdout=out, stderr=StringIO())
    assert out.getvalue().splitlines()[0] == "article_id,category,rank,neighbor_id,distance"
    with pytest.raises(CommandError, match="--k must be an integer between 1 and 100; got 0"):
        call_command("export_neighbors", "--k", "0")
    with pytest.raises(CommandError, match="output format must be csv or jsonl"):
        call_command("export_neighbors", "--output", "x.parquet")


def test_build_refreshes_stored_neighbors(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "STORE_NEIGHBORS": True}
    catalog = make_catalog(30)
    index_build_run(model="classic", progress=False)
    name = get_store().get().name
    assert SimilarArticle.objects.count() == 30 * 10
    assert set(SimilarArticle.objects.values_list("build_name", flat=True)) == {name}
    stored = stored_neighbors(catalog[0], 5)
    assert len(stored) == 5 and catalog[0].article_id not in [s.article_id for s in stored]
    from similarity.selectors.search import similar_to_article

    live = similar_to_article(article_id=catalog[0].article_id, k=5, exclude_self=True)
    assert [s.article_id for s in stored] == [r.article_id for r in live.results]
    assert stored_neighbors(catalog[0].article_id, 3) == stored[:3]


def test_the_neighbors_step_reads_the_build_it_wrote_not_the_storage(settings, tmp_path):
    """With a shared "indexes" storage the builder does not fetch its own build back."""
    from similarity.conf import similarity_settings
    from similarity.storages import build_is_stored, index_storage

    settings.STORAGES = {**settings.STORAGES, "indexes": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tmp_path / "shared-index"},
    }}
    settings.LOOKALIKE = {**settings.LOOKALIKE, "STORE_NEIGHBORS": True}
    make_catalog(8)
    build = index_build_run(model="classic", progress=False)

    assert build_is_stored(storage=index_storage(), name=build.build_name)  # published
    assert SimilarArticle.objects.filter(build_name=build.build_name).count() == 8 * 7
    assert "neighbors_seconds" in build.timings
    assert not similarity_settings().index_cache_root.exists()  # no serving copy fetched


def test_store_neighbors_setting_off(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "STORE_NEIGHBORS": False}
    make_catalog(5)
    index_build_run(model="classic", progress=False)
    assert SimilarArticle.objects.count() == 0


def test_store_searches_outside_the_transaction(catalog, monkeypatch):
    """The Faiss pass must not hold the (SQLite) write lock; only delete + insert are atomic."""
    from django.db import connection

    from similarity.services.indexing import neighbors

    outer = len(connection.atomic_blocks)  # the test's own transaction
    depths: list[int] = []
    search = neighbors.iter_catalog_neighbors

    def recording(*args, **kwargs):
        for item in search(*args, **kwargs):
            depths.append(len(connection.atomic_blocks))
            yield item

    monkeypatch.setattr(neighbors, "iter_catalog_neighbors", recording)
    run = neighbors.neighbors_store(k=4)
    assert depths and set(depths) == {outer}
    assert run.articles == 30 and run.rows == SimilarArticle.objects.count() == 30 * 4


def test_store_skips_articles_hard_deleted_since_the_build(catalog):
    from django.db import connection

    from similarity.selectors.neighbors import iter_catalog_neighbors
    from similarity.services.indexing.neighbors import neighbors_store

    gone = catalog[5].pk
    answers = dict(iter_catalog_neighbors(get_store().get(), 4, progress=False))
    assert any(gone in answer.ids.tolist() for answer in answers.values())  # still in Faiss
    Article.objects.filter(pk=gone).delete()
    run = neighbors_store(k=4)
    connection.check_constraints()  # no dangling neighbor_id
    assert run.articles == 29
    assert not SimilarArticle.objects.filter(neighbor_id=gone).exists()
    for article in catalog[:10]:
        ranks = list(SimilarArticle.objects.filter(article_id=article.pk)
                     .order_by("rank").values_list("rank", flat=True))
        assert ranks == list(range(1, len(ranks) + 1)) if article.pk != gone else ranks == []
