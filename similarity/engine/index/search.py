"""Query inner-product Faiss indexes: cosine k-NN with id filters, recall, batched range search."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import faiss
import numpy as np

from similarity.engine.index.build import check_ids, check_vectors

# Brute-force fallback work unit: reconstruct and score this many stored vectors at a time.
BRUTE_FORCE_CHUNK = 16_384
# Approximate index + filter allowing at most this many ids: skip the approximate pass (it would
# likely come back short) and score the allowed vectors exactly; cheap at this size.
EXACT_FILTER_MAX_IDS = 2_048

ERR_K = "k must be > 0; got {k}"
ERR_THRESHOLD = "threshold_distance must be in (0, 2]; got {threshold}"
ERR_BATCH = "batch_size must be > 0; got {batch_size}"


class Neighbors(NamedTuple):
    """One query's answer: ids nearest first, with their cosine distances (ascending)."""

    ids: np.ndarray
    distances: np.ndarray


def knn_query(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    allowed_ids: np.ndarray | None = None,
    exclude_ids: np.ndarray | None = None,
    params: faiss.SearchParameters | None = None,
) -> list[Neighbors]:
    """The k nearest stored vectors of each unit query, as one `Neighbors` per query.

    Distances are cosine distances (1 - inner product, clamped at 0), ascending; Faiss's -1
    padding is trimmed, so an answer is shorter than k only when fewer than k candidates exist.
    `allowed_ids` restricts results to those ids; approximate indexes that come back short
    (selective filter, unlucky probe) are re-asked exhaustively, so every answer holds
    min(k, number of matching stored vectors) results. `exclude_ids` (e.g. the query article
    itself) are dropped from the answers; keep that list small, k + len(exclude_ids) are fetched.
    `params` (e.g. SearchParametersIVF(nprobe=32)) tunes the first pass; its `sel` is replaced
    when `allowed_ids` is given.
    """
    if k <= 0:
        raise ValueError(ERR_K.format(k=k))
    if isinstance(queries, np.ndarray) and queries.ndim == 1:
        queries = queries.reshape(1, -1)
    queries = check_vectors(queries, dimension=index.d, name="queries")
    allowed = None if allowed_ids is None else _id_set(allowed_ids)
    excluded = np.empty(0, dtype=np.int64) if exclude_ids is None else _id_set(exclude_ids)
    fetch = k + len(excluded)
    if index.ntotal == 0 or (allowed is not None and allowed.size == 0) or not len(queries):
        return [_empty() for _ in queries]

    selector = faiss.IDSelectorBatch(allowed) if allowed is not None else None
    if _is_exact(index) or allowed is None or allowed.size > EXACT_FILTER_MAX_IDS:
        distances, labels = index.search(
            queries, fetch, params=_search_params(index, selector, params, fetch)
        )
        answers = [_trim(d, i) for d, i in zip(distances, labels, strict=True)]
        if not _is_exact(index):
            wanted = min(fetch, index.ntotal)
            short = [row for row, answer in enumerate(answers) if len(answer.ids) < wanted]
            if short:
                redo = _exhaustive(index, queries[short], fetch, allowed, selector)
                for row, answer in zip(short, redo, strict=True):
                    answers[row] = answer
    else:
        answers = _exhaustive(index, queries, fetch, allowed, selector)

    if excluded.size:
        answers = [_drop(answer, excluded) for answer in answers]
    return [Neighbors(a.ids[:k], a.distances[:k]) for a in answers]


def recall_at_k(
    approx_index: faiss.Index,
    exact: faiss.Index | tuple[np.ndarray, np.ndarray],
    queries: np.ndarray,
    k: int,
) -> float:
    """Mean fraction of the exact top-k ids that `approx_index` returns in its top-k.

    `exact` is an exact index or a (vectors, ids) pair scored by brute force.
    """
    if k <= 0:
        raise ValueError(ERR_K.format(k=k))
    queries = check_vectors(queries, dimension=approx_index.d, name="queries")
    if isinstance(exact, tuple):
        vectors, ids = exact
        vectors = check_vectors(vectors, dimension=approx_index.d)
        ids = check_ids(ids, len(vectors))
        truth = brute_force_knn(queries, vectors, ids, k)
    else:
        truth = knn_query(exact, queries, k)
    found = knn_query(approx_index, queries, k)
    hits = [
        len(np.intersect1d(t.ids, f.ids)) / len(t.ids)
        for t, f in zip(truth, found, strict=True)
        if len(t.ids)
    ]
    return float(np.mean(hits)) if hits else 1.0


def brute_force_knn(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int
) -> list[Neighbors]:
    """Exact cosine k-NN by numpy over (vectors, ids), in chunks; the reference for tests."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(vectors), BRUTE_FORCE_CHUNK):
        chunk = slice(start, start + BRUTE_FORCE_CHUNK)
        best_scores, best_ids = _merge_top(
            best_scores, best_ids, queries @ vectors[chunk].T, ids[chunk], k
        )
    return _answers(best_scores, best_ids)


def range_search_batched(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    threshold_distance: float,
    *,
    batch_size: int = 1024,
) -> Iterator[tuple[int, int, float]]:
    """Yield (query_id, neighbor_id, distance) for stored neighbors closer than the threshold.

    Each unordered pair is yielded once, with query_id < neighbor_id (self-matches dropped).
    Only `batch_size` queries' results are held at a time. Faiss's inner-product range search
    keeps ip > radius, so radius = 1 - threshold_distance and the bound is strict:
    distance < threshold_distance. On IVF indexes only the default nprobe lists are searched.
    """
    if not 0 < threshold_distance <= 2:
        raise ValueError(ERR_THRESHOLD.format(threshold=threshold_distance))
    if batch_size <= 0:
        raise ValueError(ERR_BATCH.format(batch_size=batch_size))
    vectors = check_vectors(vectors, dimension=index.d)
    ids = check_ids(ids, len(vectors))
    radius = 1.0 - threshold_distance
    for start in range(0, len(vectors), batch_size):
        batch_ids = ids[start : start + batch_size]
        lims, scores, labels = index.range_search(vectors[start : start + batch_size], radius)
        query_ids = np.repeat(batch_ids, np.diff(lims).astype(np.int64))
        keep = query_ids < labels
        distances = np.maximum(1.0 - scores[keep], 0.0)
        yield from zip(
            query_ids[keep].tolist(), labels[keep].tolist(), distances.tolist(), strict=True
        )


def range_query(index: faiss.Index, query: np.ndarray, threshold_distance: float) -> Neighbors:
    """Every stored vector closer than ``threshold_distance`` (strict) to one query, nearest first.

    On IVF indexes only the default nprobe lists are searched.
    """
    if not 0 < threshold_distance <= 2:
        raise ValueError(ERR_THRESHOLD.format(threshold=threshold_distance))
    queries = check_vectors(np.asarray(query).reshape(1, -1), dimension=index.d, name="query")
    _, scores, labels = index.range_search(queries, 1.0 - threshold_distance)
    order = np.lexsort((labels, -scores))
    return Neighbors(labels[order].astype(np.int64),
                     np.maximum(1.0 - scores[order], 0.0).astype(np.float32))


def _id_set(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers; got {ids.dtype}")
    return np.unique(ids.astype(np.int64, copy=False).ravel())


def _empty() -> Neighbors:
    return Neighbors(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))


def _trim(scores: np.ndarray, labels: np.ndarray) -> Neighbors:
    found = labels >= 0
    return Neighbors(labels[found], np.maximum(1.0 - scores[found], 0.0).astype(np.float32))


def _drop(answer: Neighbors, excluded: np.ndarray) -> Neighbors:
    # One excluded id (a query by article, every request): a comparison, not np.isin's sort.
    keep = answer.ids != excluded[0] if excluded.size == 1 else ~np.isin(answer.ids, excluded)
    return Neighbors(answer.ids[keep], answer.distances[keep])


def _inner(index: faiss.Index) -> faiss.Index:
    if isinstance(index, faiss.IndexIDMap):
        return faiss.downcast_index(index.index)
    return index


def _is_exact(index: faiss.Index) -> bool:
    return isinstance(_inner(index), faiss.IndexFlat)


def _search_params(
    index: faiss.Index,
    selector: faiss.IDSelector | None,
    params: faiss.SearchParameters | None,
    k: int,
) -> faiss.SearchParameters | None:
    if params is not None:
        if selector is not None:
            params.sel = selector
        return params
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(inner.hnsw.efSearch, k))
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def _exhaustive(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    selector: faiss.IDSelector | None,
) -> list[Neighbors]:
    """Exact answers on an approximate index: probe every IVF list, or score stored vectors."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and isinstance(ivf, faiss.IndexIVFFlat):
        params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist)
        distances, labels = index.search(queries, k, params=params)
        return [_trim(d, i) for d, i in zip(distances, labels, strict=True)]
    if not isinstance(index, faiss.IndexIDMap2):
        # No id -> vector map (e.g. IVF-PQ): the widest probe is the best we can do.
        params = faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nlist) if ivf else None
        distances, labels = index.search(queries, k, params=params)
        return [_trim(d, i) for d, i in zip(distances, labels, strict=True)]
    stored = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    candidates = stored if allowed is None else allowed[np.isin(allowed, stored)]
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(candidates), BRUTE_FORCE_CHUNK):
        chunk = candidates[start : start + BRUTE_FORCE_CHUNK]
        vectors = index.reconstruct_batch(chunk)
        best_scores, best_ids = _merge_top(best_scores, best_ids, queries @ vectors.T, chunk, k)
    return _answers(best_scores, best_ids)


def _merge_top(
    best_scores: np.ndarray, best_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k highest inner products per row from the running best plus a new chunk."""
    scores = np.concatenate([best_scores, scores.astype(np.float32, copy=False)], axis=1)
    labels = np.concatenate([best_ids, np.broadcast_to(ids, (len(scores), len(ids)))], axis=1)
    if scores.shape[1] > k:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, top, axis=1)
        labels = np.take_along_axis(labels, top, axis=1)
    return scores, labels


def _answers(scores: np.ndarray, labels: np.ndarray) -> list[Neighbors]:
    order = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, order, axis=1)
    labels = np.take_along_axis(labels, order, axis=1)
    return [_trim(s, i) for s, i in zip(scores, labels, strict=True)]
