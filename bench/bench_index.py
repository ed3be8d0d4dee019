"""Benchmark the Faiss index layer: build time, single-query latency and recall of flat vs auto.

Standalone (no Django). Usage:
    .venv/bin/python bench/bench_index.py [--sizes 10000,100000,1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # bench/ is on sys.path when run as a script

from similarity.engine.index import (
    Timeit,
    build_index,
    knn_query,
    recall_at_k,
    resolve_factory,
    set_faiss_threads,
)

DIMENSION = 512
CLUSTERS = 1000
CLUSTER_SPREAD = 0.03  # per-dimension noise: ~0.68 norm around a unit centre at d=512
QUERY_NOISE = 0.005  # per-dimension noise on a dataset vector: ~0.11 norm at d=512
K = 10
HNSW_MAX_SIZE = 100_000  # HNSW builds take minutes beyond this on 2 cores


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors, uniform on the sphere ('random') or around 1000 gaussian centres."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    centres = normalise_rows(rng.standard_normal((CLUSTERS, d), dtype=np.float32))
    for start in range(0, n, 65_536):
        rows = min(65_536, n - start)
        block = rng.standard_normal((rows, d), dtype=np.float32)
        if kind == "clustered":
            block *= CLUSTER_SPREAD
            block += centres[rng.integers(0, CLUSTERS, rows)]
        out[start : start + rows] = normalise_rows(block)
    return out


def make_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=count, replace=False)
    noise = QUERY_NOISE * rng.standard_normal((count, vectors.shape[1]), dtype=np.float32)
    return normalise_rows(vectors[rows] + noise)


def latency_ms(index: faiss.Index, queries: np.ndarray, **kwargs) -> tuple[float, float]:
    """p50 / p99 of single-query knn_query calls, in milliseconds."""
    knn_query(index, queries[0], K, **kwargs)  # warm-up
    timings = []
    for query in queries:
        start = time.perf_counter()
        knn_query(index, query, K, **kwargs)
        timings.append(time.perf_counter() - start)
    p50, p99 = np.percentile(timings, [50, 99]) * 1000
    return float(p50), float(p99)


def bench_one(kind: str, n: int, args: argparse.Namespace) -> list[dict]:
    rows = []
    with Timeit(f"Generating {n} {kind} vectors") as gen:
        vectors = make_vectors(kind, n, args.dim, seed=n)
    ids = np.arange(1, n + 1, dtype=np.int64)
    queries = make_queries(vectors, args.queries, seed=n + 1)
    allowed = np.random.default_rng(7).choice(ids, size=max(K, n // 100), replace=False)
    print(f"# {kind} n={n}: generated in {gen.seconds:.1f} s", flush=True)

    types = ["flat", "auto"] + (["hnsw"] if args.hnsw and n <= HNSW_MAX_SIZE else [])
    built: dict[str, faiss.Index] = {}
    for index_type in types:
        if index_type == "auto" and resolve_factory("auto", n, args.dim) == "IDMap2,Flat":
            built["auto"] = built["flat"]
            build_seconds = rows[0]["build_s"]
        else:
            with Timeit(f"Building {index_type}") as timer:
                built[index_type] = build_index(
                    vectors, ids, index_type=index_type, threads=args.threads
                )
            build_seconds = timer.seconds
        index = built[index_type]
        set_faiss_threads(1)
        p50, p99 = latency_ms(index, queries)
        filtered = latency_ms(index, queries[: args.filtered_queries], allowed_ids=allowed)
        set_faiss_threads(args.threads)
        recall = 1.0 if index_type == "flat" else recall_at_k(index, built["flat"], queries, K)
        row = {
            "dataset": kind,
            "n": n,
            "index_type": index_type,
            "factory": resolve_factory(index_type, n, args.dim),
            "build_s": round(build_seconds, 2),
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "filtered_p50_ms": round(filtered[0], 3),
            f"recall@{K}": round(recall, 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated N")
    parser.add_argument("--datasets", default="random,clustered")
    parser.add_argument("--dim", type=int, default=DIMENSION)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--filtered-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="build threads")
    parser.add_argument("--no-hnsw", dest="hnsw", action="store_false", help="skip HNSW rows")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    print(f"# CPU: {cpu_model()} x {os.cpu_count()}; faiss {faiss.__version__}", flush=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in args.datasets.split(","):
            rows.extend(bench_one(kind, n, args))

    print(
        f"\n| dataset | N | index | factory | build s | p50 ms | p99 ms | 1% filter p50 ms | recall@{K} |"
    )
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['n']:,} | {r['index_type']} | `{r['factory']}` | {r['build_s']} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['filtered_p50_ms']} | {r[f'recall@{K}']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
