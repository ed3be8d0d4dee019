"""Build and incrementally update inner-product Faiss indexes over L2-normalised vectors."""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from similarity.engine.timing import Timeit

logger = logging.getLogger("similarity.engine.index")

# "auto" policy, measured in bench/bench_index.py (see docs/benchmarks.md, "## Index").
# Below FLAT_MAX_VECTORS an exact scan costs ~1-3 ms per query at d=512 on one core, so
# exactness is worth more than the speed-up. Above it, IVF-Flat: builds 1M vectors in well
# under the 90 s budget on 2 cores, answers in ~0.2-0.4 ms, supports remove_ids (so
# incremental updates work) and mmap-loads zero-copy. HNSW was faster to query but
# ~10x slower to build and cannot remove ids.
FLAT_MAX_VECTORS = 20_000
IVF_LISTS_PER_SQRT_N = 4
IVF_TRAIN_POINTS_PER_LIST = 39
IVF_TRAIN_ITERATIONS = 10
IVF_DEFAULT_NPROBE = 8
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64

NORM_TOLERANCE = 1e-3
INDEX_TYPES = ("flat", "auto", "ivf", "hnsw")

ERR_NOT_2D = "{name} must be a 2-D array (count, dimension); got shape {shape}"
ERR_NOT_FLOAT32 = "{name} must be float32; got {dtype}"
ERR_NOT_FINITE = "{name} row {row} contains NaN or infinity"
ERR_NOT_NORMALISED = "{name} row {row} is not L2-normalised (norm {norm:.6f})"
ERR_DIMENSION = "{name} have dimension {got}; the index has dimension {expected}"
ERR_IDS_NOT_1D = "ids must be a 1-D array; got shape {shape}"
ERR_IDS_NOT_INT = "ids must be integers; got {dtype}"
ERR_IDS_NEGATIVE = "ids must be >= 0 (Faiss uses -1 for 'no result'); got {id}"
ERR_IDS_DUPLICATE = "ids must be unique; {id} appears more than once"
ERR_LENGTH = "got {vectors} vectors but {ids} ids"
ERR_IDS_PRESENT = "ids already in the index (remove them first to replace): {ids}"
ERR_INDEX_TYPE = "unknown index_type {index_type!r}: {reason}"
ERR_TOO_FEW = "index_type {index_type!r} needs at least {needed} vectors to train; got {got}"
ERR_READ_ONLY = "this index was loaded read-only (mmap); load it with mmap=False to modify it"
ERR_NO_REMOVE = "{kind} does not support remove_ids; rebuild the index instead"
ERR_THREADS = "threads must be > 0; got {threads}"

# Indexes whose storage is a read-only mmap: mutating them makes Faiss abort the process.
_read_only: weakref.WeakSet[faiss.Index] = weakref.WeakSet()


# Faiss runs on OpenMP. libgomp's thread pool does not survive fork(): a worker forked from a
# parent that already ran a multi-threaded Faiss call can hang in its first parallel region.
# So never touch Faiss in a parent before forking (gunicorn --preload, prefork task workers),
# and call set_faiss_threads() explicitly in each worker process after it starts.
# OpenMP's thread count is a setting of the calling thread, not of the process: a thread
# that never set it (each thread of a threaded web worker) uses all cores in every parallel
# region. So set it in the thread that searches (pin_faiss_threads for request threads).
_thread_setting = threading.local()


def set_faiss_threads(threads: int) -> int:
    """Set the OpenMP threads Faiss uses in the calling thread; return the previous count."""
    if threads <= 0:
        raise ValueError(ERR_THREADS.format(threads=threads))
    previous: int = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    _thread_setting.threads = threads
    return previous


def pin_faiss_threads(threads: int, *, unless_chosen: bool = False) -> None:
    """``set_faiss_threads`` once per thread: a no-op (an attribute read) when already set.

    ``unless_chosen``: leave a thread that already chose a count (e.g. a request thread) as is.
    """
    chosen = getattr(_thread_setting, "threads", None)
    if chosen != threads and not (unless_chosen and chosen is not None):
        set_faiss_threads(threads)


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[int]:
    """Run a block with `threads` Faiss threads (None: all cores), restoring the setting after."""
    wanted = threads if threads is not None else (os.cpu_count() or 1)
    previous = set_faiss_threads(wanted)
    try:
        yield wanted
    finally:
        set_faiss_threads(previous)


def check_vectors(
    vectors: np.ndarray, *, dimension: int | None = None, name: str = "vectors"
) -> np.ndarray:
    """Validate a (count, dimension) float32 array of finite unit vectors; return it contiguous."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(ERR_NOT_2D.format(name=name, shape=getattr(vectors, "shape", None)))
    if vectors.dtype != np.float32:
        raise ValueError(ERR_NOT_FLOAT32.format(name=name, dtype=vectors.dtype))
    if dimension is not None and vectors.shape[1] != dimension:
        raise ValueError(ERR_DIMENSION.format(name=name, got=vectors.shape[1], expected=dimension))
    vectors = np.ascontiguousarray(vectors)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise ValueError(ERR_NOT_FINITE.format(name=name, row=int(np.argmin(finite))))
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(ERR_NOT_NORMALISED.format(name=name, row=row, norm=float(norms[row])))
    return vectors


def check_ids(ids: np.ndarray, count: int | None = None) -> np.ndarray:
    """Validate a 1-D array of unique non-negative integer ids; return it as int64."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(ERR_IDS_NOT_1D.format(shape=ids.shape))
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(ERR_IDS_NOT_INT.format(dtype=ids.dtype))
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if count is not None and len(ids) != count:
        raise ValueError(ERR_LENGTH.format(vectors=count, ids=len(ids)))
    if ids.size and ids.min() < 0:
        raise ValueError(ERR_IDS_NEGATIVE.format(id=int(ids.min())))
    ordered = np.sort(ids)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size:
        raise ValueError(ERR_IDS_DUPLICATE.format(id=int(repeated[0])))
    return ids


def ivf_nlist(count: int) -> int:
    """Number of IVF lists for `count` vectors: ~4 * sqrt(N), at least 1."""
    return max(1, round(IVF_LISTS_PER_SQRT_N * math.sqrt(count)))


def resolve_factory(index_type: str, count: int, dimension: int) -> str:
    """The Faiss factory string (inner product metric) that build_index uses for `index_type`."""
    if index_type == "auto":
        index_type = "flat" if count < FLAT_MAX_VECTORS else "ivf"
    if index_type == "flat":
        return "IDMap2,Flat"
    if index_type == "ivf":
        return f"IVF{ivf_nlist(count)},Flat"
    if index_type == "hnsw":
        return f"IDMap2,HNSW{HNSW_M},Flat"
    if not isinstance(index_type, str) or not index_type.strip():
        raise ValueError(ERR_INDEX_TYPE.format(index_type=index_type, reason="empty"))
    probe = _factory(index_type, dimension)
    if faiss.try_extract_index_ivf(probe) is None and not isinstance(probe, faiss.IndexIDMap):
        return f"IDMap2,{index_type}"  # IVF maps ids natively; everything else needs a map
    return index_type


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    index_type: str = "flat",
    threads: int | None = None,
    seed: int = 1234,
) -> faiss.Index:
    """Build an inner-product index over unit `vectors` keyed by int64 `ids`.

    index_type: "flat" (exact), "auto" (flat below FLAT_MAX_VECTORS, IVF above), "ivf",
    "hnsw", or any Faiss factory string. Vectors are added in id order, so the result does not
    depend on input order; a flat index is byte-identical for the same (id, vector) set.
    """
    vectors = check_vectors(vectors)
    ids = check_ids(ids, len(vectors))
    count, dimension = vectors.shape
    factory = resolve_factory(index_type, count, dimension)
    vectors, ids = _sorted_by_id(vectors, ids)
    with faiss_threads(threads):
        index = _factory(factory, dimension)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = seed
            ivf.cp.niter = IVF_TRAIN_ITERATIONS
        hnsw = _hnsw(index)
        if hnsw is not None:
            hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            hnsw.efSearch = HNSW_EF_SEARCH
        if not index.is_trained:
            needed = ivf.nlist if ivf is not None else 1
            if count < needed:
                raise ValueError(
                    ERR_TOO_FEW.format(index_type=index_type, needed=needed, got=count)
                )
            sample = _training_sample(vectors, needed, seed)
            with Timeit(f"Training {factory} on {len(sample)} vectors"):
                index.train(sample)
        if ivf is not None:
            ivf.nprobe = min(IVF_DEFAULT_NPROBE, ivf.nlist)
        with Timeit(f"Adding {count} vectors to {factory}"):
            index.add_with_ids(vectors, ids)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add new (id, vector) pairs; ids must not be in the index yet (replace = remove + add).

    A flat index stays in id order (rebuilt from its stored vectors when a new id sorts before
    an existing one), so it stays byte-identical to a fresh build of the same set.
    """
    _check_writable(index)
    vectors = check_vectors(vectors, dimension=index.d)
    ids = check_ids(ids, len(vectors))
    existing = index_ids(index)
    present = ids[np.isin(ids, existing)]
    if present.size:
        raise ValueError(ERR_IDS_PRESENT.format(ids=present[:10].tolist()))
    vectors, ids = _sorted_by_id(vectors, ids)
    flat = _flat_storage(index)
    if flat is not None and existing.size and ids.size and ids[0] < existing.max():
        stored = flat.reconstruct_n(0, flat.ntotal)
        vectors, ids = _sorted_by_id(
            np.concatenate([stored, vectors]), np.concatenate([existing, ids])
        )
        index.reset()
    if ids.size:
        index.add_with_ids(vectors, ids)


def remove_ids(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove vectors by id; ids not in the index are ignored. Return how many were removed."""
    _check_writable(index)
    if not supports_incremental(index):
        raise ValueError(ERR_NO_REMOVE.format(kind=_describe(index)))
    ids = check_ids(ids)
    if not ids.size:
        return 0
    return int(index.remove_ids(faiss.IDSelectorBatch(ids)))


def supports_incremental(index: faiss.Index) -> bool:
    """True when the index supports both add_vectors and remove_ids (flat and IVF; not HNSW)."""
    if index in _read_only:
        return False
    if faiss.try_extract_index_ivf(index) is not None:
        return True
    return _flat_storage(index) is not None


def index_ids(index: faiss.Index) -> np.ndarray:
    """All ids stored in the index (id order for flat, list order for IVF)."""
    if isinstance(index, faiss.IndexIDMap):
        ids: np.ndarray = faiss.vector_to_array(index.id_map)
        return ids.astype(np.int64, copy=False)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise ValueError(f"cannot list ids of {_describe(index)}; build it with build_index")
    invlists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(ivf.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def mark_read_only(index: faiss.Index) -> None:
    """Record that `index` is backed by a read-only mmap (done by storage.load_index)."""
    _read_only.add(index)


def _check_writable(index: faiss.Index) -> None:
    if index in _read_only:
        raise ValueError(ERR_READ_ONLY)


def _factory(factory: str, dimension: int) -> faiss.Index:
    try:
        return faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ValueError(ERR_INDEX_TYPE.format(index_type=factory, reason=reason)) from None


def _sorted_by_id(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return vectors, ids  # already in order: skip a copy of every vector
    order = np.argsort(ids, kind="stable")
    return vectors[order], ids[order]


def _training_sample(vectors: np.ndarray, lists: int, seed: int) -> np.ndarray:
    size = min(len(vectors), max(lists * IVF_TRAIN_POINTS_PER_LIST, 1000))
    if size == len(vectors):
        return vectors
    rows = np.random.default_rng(seed).choice(len(vectors), size=size, replace=False)
    return vectors[np.sort(rows)]


def _inner(index: faiss.Index) -> faiss.Index:
    if isinstance(index, faiss.IndexIDMap):
        return faiss.downcast_index(index.index)
    return index


def _flat_storage(index: faiss.Index) -> faiss.IndexFlat | None:
    """The IndexFlat inside an IDMap2-over-Flat index, else None."""
    if not isinstance(index, faiss.IndexIDMap2):
        return None
    inner = _inner(index)
    return inner if isinstance(inner, faiss.IndexFlat) else None


def _hnsw(index: faiss.Index) -> faiss.HNSW | None:
    inner = _inner(index)
    return inner.hnsw if isinstance(inner, faiss.IndexHNSW) else None


def _describe(index: faiss.Index) -> str:
    inner = _inner(index)
    if inner is index:
        return type(index).__name__
    return f"{type(index).__name__}({type(inner).__name__})"
