"""Neighbors (reads): every indexed article's k nearest others by batched Faiss search, and
the stored lists (the SimilarArticle table) a storefront reads without Faiss."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import faiss
import numpy as np

from catalog.models import Article, ArticleId, ArticlePk
from catalog.progress import progress_bar
from similarity.conf import similarity_settings
from similarity.engine.index import Neighbors, knn_query
from similarity.models import SimilarArticle
from similarity.selectors.search import SimilarResult
from similarity.selectors.store import LoadedIndex
from similarity.selectors.validation import validate_k
from similarity.selectors.vectors import vector_batches


def neighbors_search(
    index: faiss.Index,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    k: int,
    *,
    allowed_ids: np.ndarray | None = None,
) -> Iterator[tuple[ArticlePk, Neighbors]]:
    """(query pk, its k nearest other pks) for each query of each batch; one Faiss call a batch.

    The query's own pk is dropped (it is in the index, at distance 0). When more than k stored
    vectors tie with it at distance 0 it may not come back at all; then the first k are kept.
    """
    for pks, vectors in batches:
        answers = knn_query(index, vectors, k + 1, allowed_ids=allowed_ids)
        for query_pk, answer in zip(pks.tolist(), answers, strict=True):
            keep = answer.ids != query_pk
            yield query_pk, Neighbors(answer.ids[keep][:k], answer.distances[keep][:k])


def _categories(pks: np.ndarray) -> dict[str, np.ndarray]:
    """The indexed article pks of each category, categories in order."""
    by_category: dict[str, list[ArticlePk]] = {}
    wanted = set(pks.tolist())
    rows = Article.objects.order_by("pk").values_list("pk", "category").iterator(chunk_size=5000)
    for pk, category in rows:
        if pk in wanted:
            by_category.setdefault(category, []).append(pk)
    return {c: np.asarray(p, dtype=np.int64) for c, p in sorted(by_category.items())}


def iter_catalog_neighbors(
    loaded: LoadedIndex,
    k: int,
    *,
    category_only: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> Iterator[tuple[ArticlePk, Neighbors]]:
    """Neighbors of every article of ``loaded``, batched; per category when ``category_only``.

    InvalidQuery for a k out of 1..MAX_K.
    """
    k = validate_k(k)
    batch_size = batch_size or similarity_settings().neighbors_batch
    identity = loaded.manifest.model_identity
    groups = _categories(loaded.ids) if category_only else {"": loaded.ids}
    bar = progress_bar(
        total=len(loaded.ids), unit="article", desc="Neighbors", enabled=progress
    )
    with bar:
        for members in groups.values():
            allowed = members if category_only else None
            for query_pk, answer in neighbors_search(
                loaded.index, vector_batches(identity, members, batch_size), k,
                allowed_ids=allowed,
            ):
                bar.update(1)
                yield query_pk, answer


def stored_neighbors(article: Article | ArticleId, k: int | None = None) -> list[SimilarResult]:
    """An article (or a shop id's) stored neighbors (itself excluded), nearest first, no Faiss.

    The results of searches (``selectors.search.SimilarResult``); [] when nothing is stored
    for it (STORE_NEIGHBORS off, article added after the last build). At most NEIGHBORS_K
    results exist.
    """
    k = k or similarity_settings().neighbors_k
    if isinstance(article, str):
        filters: dict[str, object] = {"article__article_id": article}
    else:
        filters = {"article": article}
    rows = (
        SimilarArticle.objects.filter(**filters, neighbor__is_active=True)
        .select_related("neighbor")
        .order_by("rank")[:k]
    )
    return [
        SimilarResult(
            article_id=row.neighbor.article_id,
            title=row.neighbor.title,
            category=row.neighbor.category,
            image_url=row.neighbor.image_url,
            image=row.neighbor.image.name or "",
            pk=row.neighbor_id,
            distance=row.distance,
            score=1.0 - row.distance,
        )
        for row in rows
    ]
