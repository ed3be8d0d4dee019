"""Embed the images that have no stored vector yet under a model; reuse all the others.

Every image of an indexable article is embedded: the primary one and each downloaded
additional image (``ArticleImage``); a vector is keyed by (article, model, image hash), so
a changed image is embedded again alone and an unchanged one is never recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Mod

from catalog.models import Article, ArticleId, ArticleImage, ArticlePk
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
        batches = _embedded_batches(
            embedder, todo, batch_size, decode_workers, progress, summary.timings
        )
        for batch in batches:
            _store_batch(embedder, identity, batch, todo, summary, reembed=reembed)
    _delete_replaced_embeddings(identity, pk_range)
    return summary


class _Candidate(NamedTuple):
    """An image of an indexable article as the embedder needs it."""

    pk: ArticlePk
    article_id: ArticleId
    image: str  # storage name
    image_sha256: str


def _candidate_rows(
    shard: tuple[int, int] | None, pk_range: tuple[int, int] | None = None
) -> list[_Candidate]:
    """The images of the indexable articles of ``shard`` (and of ``pk_range``): primary
    images first, then the downloaded additional ones."""
    candidates = indexable_articles()
    if pk_range is not None:
        candidates = candidates.filter(pk__gte=pk_range[0], pk__lte=pk_range[1])
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard must be i/n with 0 <= i < n; got {index}/{count}")
        candidates = candidates.annotate(shard=Mod("pk", count)).filter(shard=index)
    rows = candidates.values_list("pk", "article_id", "image", "image_sha256")
    additional = (
        ArticleImage.objects.filter(
            article__in=candidates.values("pk"),
            download_status=Article.DownloadStatus.DOWNLOADED,
        )
        .exclude(image="")
        .order_by("article", "position")
        .values_list("article_id", "article__article_id", "image", "image_sha256")
    )
    unique = dict.fromkeys(_Candidate(*row) for row in [*rows, *additional])
    return list(unique)  # an additional image equal to the primary is embedded once


def _without_stored_vector(
    articles: list[_Candidate], identity: str, pk_range: tuple[int, int] | None = None
) -> list[_Candidate]:
    """The rows whose (article, image hash) has no vector under ``identity`` yet (each
    pair once: the same photo twice in one article's gallery is embedded once)."""
    stored = _in_range(Embedding.objects.filter(model=identity), pk_range)
    have: set[tuple[int, str]] = set(stored.values_list("article_id", "image_sha256"))
    todo: list[_Candidate] = []
    for row in articles:
        if (row.pk, row.image_sha256) not in have:
            have.add((row.pk, row.image_sha256))
            todo.append(row)
    return todo


def _embedded_batches(
    embedder: Embedder,
    todo: list[_Candidate],
    batch_size: int,
    decode_workers: int,
    progress: bool,
    timings: Timings,
) -> Iterator[EmbeddedBatch[int]]:
    """The pipeline's batches of vectors for the ``todo`` rows (keyed by their position in
    ``todo``: an article may have several images), with a progress bar."""
    sources = ((key, image_source(name=str(row.image))) for key, row in enumerate(todo))
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
    batch: EmbeddedBatch[int],
    todo: list[_Candidate],
    summary: EmbedSummary,
    *,
    reembed: bool,
) -> None:
    """Insert one batch's vectors (replacing stored ones with ``reembed``); count failures."""
    rows = [
        Embedding(
            article_id=todo[key].pk,
            model=identity,
            image_sha256=todo[key].image_sha256,
            dimension=embedder.dimension,
            vector=vector.astype("<f4").tobytes(),
        )
        for key, vector in zip(batch.keys, batch.vectors, strict=True)
    ]
    with transaction.atomic():
        if reembed and rows:
            replaced = Q()
            for row in rows:  # exactly these images: others of the article are in other batches
                replaced |= Q(article_id=row.article_id, image_sha256=row.image_sha256)
            Embedding.objects.filter(replaced, model=identity).delete()
        Embedding.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    summary.embedded += len(rows)
    summary.failures.extend((todo[key].article_id, reason) for key, reason in batch.failures)


def _in_range(
    embeddings: QuerySet[Embedding], pk_range: tuple[ArticlePk, ArticlePk] | None
) -> QuerySet[Embedding]:
    """Only the embeddings of one shard's articles: a shard never scans the whole table."""
    if pk_range is None:
        return embeddings
    return embeddings.filter(article__gte=pk_range[0], article__lte=pk_range[1])


def _delete_replaced_embeddings(identity: str, pk_range: tuple[int, int] | None = None) -> None:
    """Delete the embeddings of images no article has any more (replaced or removed; an
    additional image waiting for its new URL's download keeps its old vector till then)."""
    additional = ArticleImage.objects.filter(
        article=OuterRef("article"), image_sha256=OuterRef("image_sha256")
    )
    stale = (
        _in_range(Embedding.objects.filter(model=identity), pk_range)
        .exclude(image_sha256=F("article__image_sha256"))
        .exclude(Exists(additional))
    )
    deleted, _ = stale.delete()
    if deleted:
        logger.info("Deleted %d embeddings of replaced images", deleted)
