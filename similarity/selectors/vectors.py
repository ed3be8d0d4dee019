"""Stored vectors of indexed articles: in batches from the Embedding table, or from the index.

An article's vector is made of its current images' embeddings (the primary image and the
downloaded additional ones), combined by ``engine.index.aggregate``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from django.db.models import Exists, F, OuterRef, Q, QuerySet

from catalog.models import Article, ArticleImage, ArticlePk
from similarity.engine.index.aggregate import aggregate_by_article
from similarity.models import Embedding
from similarity.selectors.store import LoadedIndex


def current_embeddings(identity: str) -> QuerySet[Embedding]:
    """The embeddings under ``identity`` of images articles have now: the primary image's,
    and each downloaded additional image's."""
    additional = ArticleImage.objects.filter(
        article=OuterRef("article"),
        image_sha256=OuterRef("image_sha256"),
        download_status=Article.DownloadStatus.DOWNLOADED,
    )
    return Embedding.objects.filter(
        Q(image_sha256=F("article__image_sha256")) | Q(Exists(additional)), model=identity
    )


def article_vectors(identity: str, article_pks: list[ArticlePk]) -> dict[ArticlePk, np.ndarray]:
    """Each article's vector (its images' embeddings combined), for those that have one."""
    rows = list(
        current_embeddings(identity)
        .filter(article__in=article_pks)
        .order_by("article_id", "pk")
        .values_list("article_id", "pk", "vector")
    )
    if not rows:
        return {}
    ids, _, vectors = aggregate_by_article(
        np.array([row[0] for row in rows], dtype=np.int64),
        np.array([row[1] for row in rows], dtype=np.int64),
        np.frombuffer(b"".join(bytes(row[2]) for row in rows), dtype="<f4")
        .reshape(len(rows), -1)
        .astype(np.float32),
    )
    return {int(pk): vector for pk, vector in zip(ids, vectors, strict=True)}


def vector_batches(
    identity: str, ids: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(article pks, vectors) of the stored embeddings of ``ids`` (article pks), a batch at a
    time.

    One query per batch, so memory holds one batch of vectors, never the whole catalog.
    Ids without a current embedding (changed since the build) are left out.
    """
    for start in range(0, len(ids), batch_size):
        wanted: list[ArticlePk] = [int(pk) for pk in ids[start : start + batch_size]]
        rows = article_vectors(identity, wanted)
        found = [pk for pk in wanted if pk in rows]
        if not found:
            continue
        yield np.asarray(found, dtype=np.int64), np.stack([rows[pk] for pk in found])


def index_vectors(loaded: LoadedIndex, ids: np.ndarray) -> np.ndarray:
    """The index's vectors of ``ids`` (all members of the build), in order.

    Read from Faiss where it keeps an id map (flat and HNSW builds), else from the
    embeddings the build recorded in members.npy.
    """
    import faiss

    if isinstance(loaded.index, faiss.IndexIDMap2):
        return np.asarray(loaded.index.reconstruct_batch(ids), dtype=np.float32)
    members = loaded.members_embeddings(ids)
    rows = dict(Embedding.objects.filter(pk__in=members.tolist()).values_list("pk", "vector"))
    # A negative member is an article of several images: its vector is their combination.
    several = [int(pk) for pk, key in zip(ids, members, strict=True) if key < 0]
    combined = article_vectors(loaded.manifest.model_identity, several)
    return np.stack([
        combined[int(pk)] if key < 0 else np.frombuffer(bytes(rows[int(key)]), dtype="<f4")
        for pk, key in zip(ids, members, strict=True)
    ]).astype(np.float32)
