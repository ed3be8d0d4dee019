"""Embed the images that have no stored vector yet under a model; reuse all the others."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Mod

from catalog.models import Article, ArticleId, ArticlePk
from catalog.progress import progress_bar
from catalog.selectors import image_source
from similarity.engine.embedders import Embedder
from similarity.engine.embedders.pipeline import EmbeddedBatch, Timings, embed_sources
from similarity.models import Embedding

logger = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    embedded: int = 0
    reused: int = 0
    failures: list[tuple[ArticleId, str]] = field(default_factory=list)  # (shop id, reason)
    timings: Timings = field(default_factory=Timings)


def indexable_articles() -> QuerySet[Article]:
    """Active articles with a downloaded image: what an index build covers."""
    return Article.objects.filter(
        is_active=True, download_status=Article.DownloadStatus.DOWNLOADED
    ).exclude(image="")


def embeddings_update(
    *,
    embedder: Embedder,
    batch_size: int = 32,
    decode_workers: int = 2,
    reembed: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    pk_range: tuple[int, int] | None = None,
) -> EmbedSummary:
    """Store an embedding for every indexable article whose (model, image hash) has none.

    Safe to run in several processes at once: rows are keyed by (article, model, image
    hash) and inserted with ignore_conflicts. Images that cannot be decoded are skipped
    with their reason. Embeddings of replaced images are deleted afterwards. ``reembed``
    recomputes every vector, replacing stored ones one batch at a time. ``shard`` =
    (index, count) embeds only the articles whose pk % count == index, so ``count``
    processes (``manage.py embed_images --shard i/n``) split a large catalog between them.
    ``pk_range`` = (first, last) embeds only the articles with first <= pk <= last (one
    shard of a distributed build, ``builds.distributed.shards``).
    """
    identity = embedder.identity()
    articles = _candidate_rows(shard, pk_range)
    # With reembed nothing counts as stored: every vector is replaced batch by batch, so an
    # interrupted run leaves the old vectors of the articles it did not reach in place.
    todo = articles if reembed else _without_stored_vector(articles, identity, pk_range)
    summary = EmbedSummary(reused=len(articles) - len(todo))
    if todo:
        by_pk = {row.pk: row for row in todo}
        batches = _embedded_batches(
            embedder, todo, batch_size, decode_workers, progress, summary.timings
        )
        for batch in batches:
            _store_batch(embedder, identity, batch, by_pk, summary, reembed=reembed)
    _delete_replaced_embeddings(identity, pk_range)
    return summary


class _Candidate(NamedTuple):
    """An indexable article as the embedder needs it."""

    pk: ArticlePk
    article_id: ArticleId
    image: str  # storage name
    image_sha256: str


def _candidate_rows(
    shard: tuple[int, int] | None, pk_range: tuple[int, int] | None = None
) -> list[_Candidate]:
    """The indexable articles of ``shard`` (and of ``pk_range``)."""
    candidates = indexable_articles()
    if pk_range is not None:
        candidates = candidates.filter(pk__gte=pk_range[0], pk__lte=pk_range[1])
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard must be i/n with 0 <= i < n; got {index}/{count}")
        candidates = candidates.annotate(shard=Mod("pk", count)).filter(shard=index)
    rows = candidates.values_list("pk", "article_id", "image", "image_sha256")
    return [_Candidate(*row) for row in rows]


def _without_stored_vector(
    articles: list[_Candidate], identity: str, pk_range: tuple[int, int] | None = None
) -> list[_Candidate]:
    """The rows whose (article, image hash) has no vector under ``identity`` yet."""
    stored = _in_range(Embedding.objects.filter(model=identity), pk_range)
    have = set(stored.values_list("article", "image_sha256"))  # (article pk, hash)
    return [row for row in articles if (row.pk, row.image_sha256) not in have]


def _embedded_batches(
    embedder: Embedder,
    todo: list[_Candidate],
    batch_size: int,
    decode_workers: int,
    progress: bool,
    timings: Timings,
) -> Iterator[EmbeddedBatch[ArticlePk]]:
    """The pipeline's batches of vectors for the ``todo`` rows, with a progress bar."""
    sources = ((row.pk, image_source(name=str(row.image))) for row in todo)
    bar = progress_bar(total=len(todo), desc="Embedding", unit="img", enabled=progress)
    try:
        yield from embed_sources(
            embedder,
            sources,
            batch_size=batch_size,
            decode_workers=decode_workers,
            progress=bar.update,
            timings=timings,
        )
    finally:
        bar.close()


def _store_batch(
    embedder: Embedder,
    identity: str,
    batch: EmbeddedBatch[ArticlePk],
    by_pk: dict[ArticlePk, _Candidate],
    summary: EmbedSummary,
    *,
    reembed: bool,
) -> None:
    """Insert one batch's vectors (replacing stored ones with ``reembed``); count failures."""
    rows = [
        Embedding(
            article_id=pk,
            model=identity,
            image_sha256=by_pk[pk].image_sha256,
            dimension=embedder.dimension,
            vector=vector.astype("<f4").tobytes(),
        )
        for pk, vector in zip(batch.keys, batch.vectors, strict=True)
    ]
    with transaction.atomic():
        if reembed:
            Embedding.objects.filter(model=identity, article__in=batch.keys).delete()
        Embedding.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    summary.embedded += len(rows)
    summary.failures.extend((by_pk[pk].article_id, reason) for pk, reason in batch.failures)


def _in_range(
    embeddings: QuerySet[Embedding], pk_range: tuple[ArticlePk, ArticlePk] | None
) -> QuerySet[Embedding]:
    """Only the embeddings of one shard's articles: a shard never scans the whole table."""
    if pk_range is None:
        return embeddings
    return embeddings.filter(article__gte=pk_range[0], article__lte=pk_range[1])


def _delete_replaced_embeddings(identity: str, pk_range: tuple[int, int] | None = None) -> None:
    stale = _in_range(Embedding.objects.filter(model=identity), pk_range).exclude(
        image_sha256=F("article__image_sha256")
    )
    deleted, _ = stale.delete()
    if deleted:
        logger.info("Deleted %d embeddings of replaced images", deleted)
