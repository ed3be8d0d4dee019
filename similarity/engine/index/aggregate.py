"""Several image vectors per article made one: the mean of the unit vectors, normalised again.

Measured on real photos (docs/benchmarks.md "Several photos per article"): the mean beats
the best single photo (best pair) and several vectors per article in the index, and it
keeps one vector per article, so the index, its ids (article pks) and everything reading
them stay as they are. An article with one image keeps that image's vector bit for bit.

``members.npy`` records, for each id, the embedding behind it; for an article made of
several images it records a negative key derived from their embedding pks, so that any
change among them (one replaced, added or removed) changes the key and an incremental
update replaces the article's vector.
"""

from __future__ import annotations

import hashlib

import numpy as np


def group_signature(embedding_pks: np.ndarray) -> int:
    """A negative int64 naming a set of embeddings (never a real, positive embedding pk)."""
    ordered = np.sort(np.asarray(embedding_pks, dtype="<i8"))
    digest = hashlib.blake2b(ordered.tobytes(), digest_size=8).digest()
    return -1 - (int.from_bytes(digest, "little") >> 2)


def aggregate_by_article(
    article_pks: np.ndarray, embedding_pks: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, member keys, vectors): one row per article from rows sorted by article pk.

    ``vectors`` are unit rows; an article's several rows become their normalised mean and
    the member key ``group_signature`` of their embedding pks; a lone row stays as it is.
    """
    if len(article_pks) != len(embedding_pks) or len(article_pks) != len(vectors):
        raise ValueError(
            f"need aligned rows; got {len(article_pks)} ids, {len(embedding_pks)} embedding "
            f"pks, {len(vectors)} vectors"
        )
    if len(article_pks) == 0:
        return article_pks.astype(np.int64), embedding_pks.astype(np.int64), vectors
    if np.any(np.diff(article_pks) < 0):
        raise ValueError("rows must be sorted by article pk")
    ids, starts, counts = np.unique(article_pks, return_index=True, return_counts=True)
    if len(ids) == len(article_pks):  # one image per article: nothing to combine
        return ids.astype(np.int64), embedding_pks.astype(np.int64), vectors
    sums = np.add.reduceat(vectors.astype(np.float64), starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    means = (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    single = counts == 1
    means[single] = vectors[starts[single]]  # bit for bit, not a float64 round trip
    keys = embedding_pks[starts].astype(np.int64)
    for position in np.flatnonzero(~single):
        start = starts[position]
        keys[position] = group_signature(embedding_pks[start : start + counts[position]])
    return ids.astype(np.int64), keys, means


def best_image(query: np.ndarray, vectors: np.ndarray) -> tuple[int, float]:
    """(row, cosine similarity) of the image vector closest to the unit ``query``."""
    scores = vectors @ query.astype(np.float32).ravel()
    row = int(np.argmax(scores))
    return row, float(scores[row])
