"""Stored vectors of indexed articles: in batches from the Embedding table, or from the index."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from django.db.models import F

from catalog.models import ArticlePk
from similarity.models import Embedding
from similarity.selectors.store import LoadedIndex


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
        rows = dict(
            Embedding.objects.filter(
                model=identity, article__in=wanted, image_sha256=F("article__image_sha256")
            ).values_list("article_id", "vector")  # the foreign key: the article's pk
        )
        found = [pk for pk in wanted if pk in rows]
        if not found:
            continue
        vectors = np.frombuffer(b"".join(bytes(rows[pk]) for pk in found), dtype="<f4")
        yield np.asarray(found, dtype=np.int64), vectors.reshape(len(found), -1).astype(np.float32)


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
    blob = b"".join(bytes(rows[int(pk)]) for pk in members)
    return np.frombuffer(blob, dtype="<f4").reshape(len(ids), -1).astype(np.float32)
