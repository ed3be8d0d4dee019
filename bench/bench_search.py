"""Search service latency against raw Faiss, in one process, at 100k articles (auto index).

Usage: .venv/bin/python bench/bench_search.py [--articles 100000] [--queries 2000] [--keep DIR]

Rows: raw `index.search` on the loaded index; the pure `knn_query` wrapper; the service's
search path given a vector (`get_store().get()` + validation + search + id trimming); and
the full `similar_to_article` (article + stored embedding from the database, search,
results hydrated from the database). Faiss runs on 1 thread, as a web worker would.
The vectors are random unit vectors inserted directly: a benchmark of the serving path,
not of embedding.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.array(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def timed(fn, args_list) -> list[float]:
    samples = []
    for args in args_list:
        started = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--keep", default="", help="reuse/keep this data dir (skips setup)")
    args = parser.parse_args()
    from bench.bench_api import cpu_model, setup_data

    data_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-search-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
        "LOG_LEVEL": "WARNING",
        "LOOKALIKE_THREADS": "1",
    }
    try:
        if args.keep and (data_dir / "index" / "CURRENT").exists():
            os.environ.update(env)
            import django

            django.setup()
        else:
            print("Setup:", setup_data(args.articles, env))
        import faiss

        from catalog.models import Article
        from similarity.engine.index import knn_query
        from similarity.models import Embedding
        from similarity.selectors.search import _search, similar_to_article
        from similarity.selectors.store import get_store

        loaded = get_store().get()
        faiss.omp_set_num_threads(1)
        rng = np.random.default_rng(1)
        pks = rng.choice(loaded.ids, size=args.queries, replace=False)
        rows = dict(
            Embedding.objects.filter(article_id__in=pks.tolist()).values_list("article_id", "vector")
        )
        ids = dict(Article.objects.filter(pk__in=pks.tolist()).values_list("pk", "article_id"))
        vectors = [np.frombuffer(bytes(rows[int(pk)]), dtype="<f4").reshape(1, -1) for pk in pks]
        article_ids = [ids[int(pk)] for pk in pks]
        for vector in vectors[:200]:  # warm up page cache and code paths
            loaded.index.search(vector, 10)
            similar_to_article(article_id=article_ids[0], k=10)

        results = {
            "raw Faiss index.search": timed(lambda v: loaded.index.search(v, 10), [(v,) for v in vectors]),
            "knn_query (pure wrapper)": timed(lambda v: knn_query(loaded.index, v, 10), [(v,) for v in vectors]),
            "service search path (vector in hand)": timed(
                lambda v: _search(get_store().get(), v[0], 10, category=None), [(v,) for v in vectors]
            ),
            "similar_to_article (with database)": timed(
                lambda a: similar_to_article(article_id=a, k=10), [(a,) for a in article_ids]
            ),
        }
        raw_p50, _raw_p99 = percentiles(results["raw Faiss index.search"])
        print(f"\n{cpu_model()}, {os.cpu_count()} CPUs; index {loaded.manifest.factory}, "
              f"{loaded.index.ntotal} vectors; {args.queries} queries, Faiss 1 thread\n")
        print("| path | p50 ms | p99 ms | added over raw p50 ms |")
        print("|---|---:|---:|---:|")
        for name, samples in results.items():
            p50, p99 = percentiles(samples)
            print(f"| {name} | {p50:.3f} | {p99:.3f} | {p50 - raw_p50:+.3f} |")
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
