"""Tests for the pure Faiss index layer: build, update, query, store."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from similarity.engine.index import (
    BuildManifest,
    Timeit,
    add_vectors,
    brute_force_knn,
    build_index,
    current_build,
    find_build_by_checksum,
    index_ids,
    input_checksum,
    knn_query,
    list_builds,
    load_index,
    pin_faiss_threads,
    prune_builds,
    range_search_batched,
    recall_at_k,
    remove_ids,
    resolve_factory,
    set_current,
    set_faiss_threads,
    supports_incremental,
    write_build,
)
from similarity.engine.index import search as search_module
from similarity.engine.index.storage import INDEX_FILE, clean_stale_tmp

N, D = 2000, 64
IVF = "IVF16,Flat"


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int, seed: int, clusters: int = 20, spread: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((clusters, d)))
    labels = rng.integers(0, clusters, n)
    return normalise(centres[labels] + spread * rng.standard_normal((n, d)))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = normalise(rng.standard_normal((N, D)))
    ids = rng.choice(10**6, size=N, replace=False).astype(np.int64) + 1
    return vectors, ids


@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return clustered(N, D, seed=1), rng.choice(10**6, size=N, replace=False).astype(np.int64)


@pytest.fixture(scope="module")
def indexes(clustered_data) -> dict[str, faiss.Index]:
    vectors, ids = clustered_data
    return {
        kind: build_index(vectors, ids, index_type=kind, threads=1)
        for kind in ("flat", IVF, "hnsw")
    }


def numpy_topk(queries, vectors, ids, k):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids[order], 1.0 - np.take_along_axis(scores, order, axis=1)


def serialized(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


# --- exact search -------------------------------------------------------------------------


def test_flat_search_equals_numpy_brute_force(data):
    vectors, ids = data
    queries = normalise(np.random.default_rng(5).standard_normal((50, D)))
    index = build_index(vectors, ids)
    answers = knn_query(index, queries, 10)
    want_ids, want_dist = numpy_topk(queries, vectors, ids, 10)
    np.testing.assert_array_equal(np.stack([a.ids for a in answers]), want_ids)
    np.testing.assert_allclose(np.stack([a.distances for a in answers]), want_dist, atol=1e-5)
    assert all(np.all(np.diff(a.distances) >= 0) for a in answers)


@pytest.mark.parametrize("kind", ["flat", IVF])
def test_every_vector_finds_itself_first(clustered_data, indexes, kind):
    vectors, ids = clustered_data
    answers = knn_query(indexes[kind], vectors, 1)
    np.testing.assert_array_equal([a.ids[0] for a in answers], ids)
    distances = np.array([a.distances[0] for a in answers])
    assert distances.min() >= 0.0
    assert distances.max() < 1e-5


def test_single_1d_query_and_exclude_ids(data):
    vectors, ids = data
    index = build_index(vectors, ids)
    [answer] = knn_query(index, vectors[7], 5, exclude_ids=[ids[7]])
    assert ids[7] not in answer.ids
    want_ids, _ = numpy_topk(vectors[7:8], vectors, ids, 6)
    np.testing.assert_array_equal(answer.ids, want_ids[0, 1:])


def test_k_larger_than_index_trims_missing(data):
    vectors, ids = data
    for kind in ("flat", "IVF2,Flat", "hnsw"):
        index = build_index(vectors[:5], ids[:5], index_type=kind)
        answers = knn_query(index, vectors[:3], 10)
        assert [len(a.ids) for a in answers] == [5, 5, 5]
        assert all((a.ids >= 0).all() and len(a.distances) == 5 for a in answers)
    empty = build_index(np.empty((0, D), np.float32), np.empty(0, np.int64))
    assert [len(a.ids) for a in knn_query(empty, vectors[:2], 3)] == [0, 0]


# --- determinism and incremental updates --------------------------------------------------


def test_flat_build_is_byte_identical_regardless_of_input_order(data, tmp_path):
    vectors, ids = data
    perm = np.random.default_rng(3).permutation(N)
    paths = []
    for name, order in (("a", np.arange(N)), ("b", perm)):
        index = build_index(vectors[order], ids[order])
        checksum = input_checksum(ids[order], vectors[order], "m")
        manifest = BuildManifest(
            model="m", index_type="flat", factory="IDMap2,Flat", input_checksum=checksum
        )
        paths.append(write_build(tmp_path / name, index, manifest))
    assert (paths[0] / INDEX_FILE).read_bytes() == (paths[1] / INDEX_FILE).read_bytes()
    assert paths[0].name.split("-")[1] == paths[1].name.split("-")[1]


def test_ivf_build_is_deterministic(clustered_data):
    vectors, ids = clustered_data
    perm = np.random.default_rng(4).permutation(N)
    first = build_index(vectors, ids, index_type=IVF, threads=1)
    second = build_index(vectors[perm], ids[perm], index_type=IVF, threads=1)
    assert serialized(first) == serialized(second)


def test_flat_incremental_updates_equal_a_fresh_build(data):
    vectors, ids = data
    index = build_index(vectors[:1500], ids[:1500])
    assert supports_incremental(index)
    add_vectors(index, vectors[1500:], ids[1500:])  # new ids interleave with old ones
    assert remove_ids(index, ids[:100]) == 100
    assert remove_ids(index, np.array([0], np.int64)) == 0  # unknown id: ignored
    changed = normalise(np.random.default_rng(9).standard_normal((1, D)))
    remove_ids(index, ids[200:201])
    add_vectors(index, changed, ids[200:201])

    final_vectors = np.concatenate([vectors[100:200], changed, vectors[201:]])
    final_ids = np.concatenate([ids[100:200], ids[200:201], ids[201:]])
    fresh = build_index(final_vectors, final_ids)
    assert serialized(index) == serialized(fresh)
    queries = vectors[:20]
    for got, want in zip(knn_query(index, queries, 10), knn_query(fresh, queries, 10), strict=True):
        np.testing.assert_array_equal(got.ids, want.ids)


def test_ivf_incremental_updates(clustered_data):
    vectors, ids = clustered_data
    index = build_index(vectors[:1800], ids[:1800], index_type=IVF)
    assert supports_incremental(index)
    add_vectors(index, vectors[1800:], ids[1800:])
    assert remove_ids(index, ids[:300]) == 300
    np.testing.assert_array_equal(np.sort(index_ids(index)), np.sort(ids[300:]))
    queries = vectors[:30]
    want = brute_force_knn(queries, vectors[300:], ids[300:], 10)
    params = faiss.SearchParametersIVF(nprobe=16)
    got = knn_query(index, queries, 10, params=params)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.ids, w.ids)


def test_hnsw_adds_but_cannot_remove(clustered_data):
    vectors, ids = clustered_data
    index = build_index(vectors[:1000], ids[:1000], index_type="hnsw")
    assert not supports_incremental(index)
    add_vectors(index, vectors[1000:1010], ids[1000:1010])
    assert index.ntotal == 1010
    with pytest.raises(ValueError, match="does not support remove_ids"):
        remove_ids(index, ids[:1])


# --- filtering ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", IVF, "hnsw"])
@pytest.mark.parametrize("approximate_first", [False, True])
def test_selective_filter_still_returns_k_results(
    clustered_data, indexes, kind, approximate_first, monkeypatch
):
    if approximate_first:  # force the approximate pass + short-answer fallback path
        monkeypatch.setattr(search_module, "EXACT_FILTER_MAX_IDS", 0)
    vectors, ids = clustered_data
    rng = np.random.default_rng(11)
    allowed = rng.choice(ids, size=N // 100, replace=False)  # 1% of the catalogue
    queries = vectors[rng.choice(N, 25, replace=False)]
    answers = knn_query(indexes[kind], queries, 10, allowed_ids=allowed)
    mask = np.isin(ids, allowed)
    want = brute_force_knn(queries, vectors[mask], ids[mask], 10)
    for got, expected in zip(answers, want, strict=True):
        assert len(got.ids) == 10
        assert np.isin(got.ids, allowed).all()
        assert np.all(np.diff(got.distances) >= 0)
        if kind == "flat" or not approximate_first:  # exact answers, not just k of them
            np.testing.assert_array_equal(got.ids, expected.ids)
            np.testing.assert_allclose(got.distances, expected.distances, atol=1e-5)


def test_filter_with_fewer_allowed_than_k(indexes, clustered_data):
    vectors, ids = clustered_data
    for index in indexes.values():
        answers = knn_query(index, vectors[:3], 10, allowed_ids=ids[:4])
        assert [sorted(a.ids.tolist()) for a in answers] == [sorted(ids[:4].tolist())] * 3
        assert knn_query(index, vectors[:2], 10, allowed_ids=[])[0].ids.size == 0


def test_recall_at_k(indexes, clustered_data):
    vectors, ids = clustered_data
    queries = vectors[:100]
    assert recall_at_k(indexes["flat"], indexes["flat"], queries, 10) == 1.0
    assert recall_at_k(indexes[IVF], (vectors, ids), queries, 10) >= 0.9
    assert recall_at_k(indexes["hnsw"], indexes["flat"], queries, 10) >= 0.9


# --- range search -------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 128, 10_000])
def test_range_search_batched_equals_brute_force(clustered_data, indexes, batch_size):
    vectors, ids = clustered_data
    threshold = 0.35
    pairs = list(
        range_search_batched(indexes["flat"], vectors, ids, threshold, batch_size=batch_size)
    )
    got = {(q, n): d for q, n, d in pairs}
    assert len(got) == len(pairs)
    assert all(q < n and 0 <= d < threshold for (q, n), d in got.items())

    distance = 1.0 - vectors @ vectors.T
    rows, cols = np.nonzero(distance < threshold)
    want = {}
    for r, c in zip(rows, cols, strict=True):
        if ids[r] < ids[c]:
            want[(int(ids[r]), int(ids[c]))] = float(distance[r, c])
    assert want, "the clustered fixture should have near pairs"
    near_boundary = {p for p, d in {**want, **got}.items() if abs(d - threshold) < 1e-5}
    assert set(got) - near_boundary == set(want) - near_boundary
    for pair in set(got) & set(want):
        assert got[pair] == pytest.approx(want[pair], abs=1e-5)


# --- validation ---------------------------------------------------------------------------


def _bad(vectors, ids, **changes):
    vectors, ids = vectors.copy(), ids.copy()
    if "row_nan" in changes:
        vectors[3, 0] = np.nan
    if "row_scaled" in changes:
        vectors[4] *= 2
    if "dup" in changes:
        ids[5] = ids[6]
    if "negative" in changes:
        ids[2] = -1
    return vectors, ids


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda v, i: (v[0], i), r"vectors must be a 2-D array .* got shape \(64,\)"),
        (lambda v, i: (v.astype(np.float64), i), "vectors must be float32; got float64"),
        (lambda v, i: _bad(v, i, row_nan=1), "vectors row 3 contains NaN or infinity"),
        (lambda v, i: _bad(v, i, row_scaled=1), r"vectors row 4 is not L2-normalised \(norm 2"),
        (lambda v, i: _bad(v, i, dup=1), "ids must be unique; .* appears more than once"),
        (lambda v, i: _bad(v, i, negative=1), r"ids must be >= 0 .*got -1"),
        (lambda v, i: (v, i[:-1]), "got 2000 vectors but 1999 ids"),
        (lambda v, i: (v, i.astype(np.float64)), "ids must be integers; got float64"),
    ],
)
def test_build_validation_errors(data, make, message):
    vectors, ids = make(*data)
    with pytest.raises(ValueError, match=message):
        build_index(vectors, ids)


def test_other_validation_errors(data):
    vectors, ids = data
    index = build_index(vectors[:100], ids[:100])
    with pytest.raises(ValueError, match="k must be > 0; got 0"):
        knn_query(index, vectors[:1], 0)
    with pytest.raises(ValueError, match="queries have dimension 32; the index has dimension 64"):
        knn_query(index, normalise(np.ones((1, 32))), 3)
    with pytest.raises(ValueError, match=r"ids already in the index .*\[" + str(ids[0])):
        add_vectors(index, vectors[:1], ids[:1])
    with pytest.raises(ValueError, match="unknown index_type 'nonsense'"):
        build_index(vectors, ids, index_type="nonsense")
    with pytest.raises(ValueError, match="needs at least 16 vectors to train; got 10"):
        build_index(vectors[:10], ids[:10], index_type=IVF)
    with pytest.raises(ValueError, match="threshold_distance must be in"):
        list(range_search_batched(index, vectors[:5], ids[:5], 0.0))
    with pytest.raises(ValueError, match="threads must be > 0; got 0"):
        set_faiss_threads(0)


def test_resolve_factory_and_auto_policy():
    assert resolve_factory("flat", 10, D) == "IDMap2,Flat"
    assert resolve_factory("auto", 1000, D) == "IDMap2,Flat"
    assert resolve_factory("auto", 100_000, D) == "IVF1265,Flat"
    assert resolve_factory("ivf", 1_000_000, D) == "IVF4000,Flat"
    assert resolve_factory("HNSW16", 10, D) == "IDMap2,HNSW16"
    assert resolve_factory("IVF64,Flat", 10, D) == "IVF64,Flat"


def test_set_faiss_threads_returns_previous():
    previous = set_faiss_threads(1)
    try:
        assert faiss.omp_get_max_threads() == 1
    finally:
        set_faiss_threads(previous)


def _in_new_thread(function):
    out = []
    thread = threading.Thread(target=lambda: out.append(function()))
    thread.start()
    thread.join()
    return out[0]


def test_faiss_threads_are_a_setting_of_the_calling_thread():
    cores = os.cpu_count() or 1
    previous = set_faiss_threads(1)
    try:
        # A thread that never chose (a web worker's request thread) gets all cores.
        assert _in_new_thread(faiss.omp_get_max_threads) == cores
    finally:
        set_faiss_threads(previous)


def test_pin_faiss_threads_sets_once_and_respects_a_thread_that_chose():
    def pinned():
        pin_faiss_threads(1)
        first = faiss.omp_get_max_threads()
        pin_faiss_threads(2, unless_chosen=True)  # already chose 1: kept
        kept = faiss.omp_get_max_threads()
        pin_faiss_threads(2)
        return first, kept, faiss.omp_get_max_threads()

    assert _in_new_thread(pinned) == (1, 1, 2)

    def unchosen():
        pin_faiss_threads(1, unless_chosen=True)
        return faiss.omp_get_max_threads()

    assert _in_new_thread(unchosen) == 1


def test_knn_query_excludes_one_or_many_ids():
    rng = np.random.default_rng(3)
    vectors = normalise(rng.standard_normal((50, 8)))
    index = build_index(vectors, np.arange(50), index_type="flat")
    everything = knn_query(index, vectors[0], 5)[0].ids
    assert knn_query(index, vectors[0], 4, exclude_ids=np.array([0]))[0].ids.tolist() == (
        everything[1:].tolist()
    )
    two = knn_query(index, vectors[0], 3, exclude_ids=np.array([0, everything[1]]))[0].ids
    assert two.tolist() == everything[2:].tolist()


def test_timeit_logs_and_exposes_seconds(caplog):
    logger = "similarity.engine.index"
    with caplog.at_level(logging.INFO, logger=logger), Timeit("Phase X") as timer:
        time.sleep(0.01)
    assert timer.seconds >= 0.01
    assert "Phase X took" in caplog.text


# --- storage ------------------------------------------------------------------------------


def _write(root: Path, vectors, ids, kind="flat") -> Path:
    index = build_index(vectors, ids, index_type=kind)
    manifest = BuildManifest(
        model="test-model",
        index_type=kind,
        factory=resolve_factory(kind, len(ids), vectors.shape[1]),
        input_checksum=input_checksum(ids, vectors, "test-model"),
    )
    return write_build(root, index, manifest)


def test_write_build_and_switch_current(data, tmp_path):
    vectors, ids = data
    assert current_build(tmp_path) is None
    first = _write(tmp_path, vectors[:500], ids[:500])
    assert current_build(tmp_path) is None  # written, not yet switched
    set_current(tmp_path, first.name)
    info = current_build(tmp_path)
    assert info is not None and info.path == first
    assert info.manifest.count == 500 and info.manifest.dimension == D
    assert info.manifest.model == "test-model" and info.manifest.created_at

    second = _write(tmp_path, vectors, ids)
    assert second.name > first.name
    set_current(tmp_path, second.name)
    assert current_build(tmp_path).name == second.name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    with pytest.raises(ValueError, match="no finished build named 'missing'"):
        set_current(tmp_path, "missing")


def test_crash_mid_build_leaves_current_untouched(data, tmp_path):
    vectors, ids = data
    good = _write(tmp_path, vectors[:300], ids[:300])
    set_current(tmp_path, good.name)
    # A writer died after creating its temp dir and half an index file.
    leftover = tmp_path / "builds" / ".tmp-20990101T000000000000Z-deadbeef-123"
    leftover.mkdir()
    (leftover / INDEX_FILE).write_bytes(b"\x00" * 100)
    assert [b.name for b in list_builds(tmp_path)] == [good.name]
    assert current_build(tmp_path).name == good.name
    assert clean_stale_tmp(tmp_path) == []  # fresh: might be a write in progress
    old = time.time() - 2 * 3600
    os.utime(leftover, (old, old))
    prune_builds(tmp_path)
    assert not leftover.exists()
    assert current_build(tmp_path).name == good.name


def test_prune_keeps_current_and_newest(data, tmp_path):
    vectors, ids = data
    names = [_write(tmp_path, vectors[: 100 + i], ids[: 100 + i]).name for i in range(5)]
    set_current(tmp_path, names[0])  # e.g. rolled back to the oldest
    removed = prune_builds(tmp_path, keep=2)
    assert removed == names[1:3]
    assert [b.name for b in list_builds(tmp_path)] == [names[0], *names[3:]]
    assert current_build(tmp_path).name == names[0]


def test_find_build_by_checksum_detects_unchanged_inputs(data, tmp_path):
    vectors, ids = data
    build = _write(tmp_path, vectors[:200], ids[:200])
    perm = np.random.default_rng(2).permutation(200)
    same = input_checksum(ids[:200][perm], vectors[:200][perm], "test-model")
    assert find_build_by_checksum(tmp_path, same).path == build
    assert input_checksum(ids[:200], vectors[:200], "other-model") != same
    assert find_build_by_checksum(tmp_path, input_checksum(ids[:201], vectors[:201], "m")) is None
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["input_checksum"] == same


@pytest.mark.parametrize("kind", ["flat", IVF, "hnsw"])
def test_mmap_load_searches_equal_and_is_read_only(clustered_data, tmp_path, kind):
    vectors, ids = clustered_data
    path = _write(tmp_path, vectors, ids, kind)
    in_memory = load_index(path, mmap=False)
    mapped = load_index(path)
    queries = vectors[:50]
    for got, want in zip(
        knn_query(mapped, queries, 10), knn_query(in_memory, queries, 10), strict=True
    ):
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.distances, want.distances)
    assert not supports_incremental(mapped)
    with pytest.raises(ValueError, match="loaded read-only"):
        add_vectors(mapped, normalise(np.ones((1, D))), np.array([10**7]))
    with pytest.raises(ValueError, match="loaded read-only"):
        remove_ids(mapped, ids[:1])
    assert supports_incremental(in_memory) == (kind != "hnsw")
