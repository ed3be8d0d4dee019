"""Benchmark: whole-catalog neighbors (throughput, approximate recall), duplicates memory, refresh."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_model  # bench/ is on sys.path when run as a script

from similarity.engine.index import brute_force_knn, build_index, knn_query, range_search_batched

D = 512
K = 10
BATCH = 1024


def clustered(n: int, seed: int = 0, clusters: int = 2000, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around random centres (a catalog has families of similar products)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, D), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, D), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + spread / np.sqrt(D) * rng.standard_normal((m, D), dtype=np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def export_rate(index, vectors: np.ndarray, ids: np.ndarray, queries: int) -> tuple[float, int]:
    """Articles/s of the export loop (batches of 1024, k+1 then self dropped) over `queries` rows."""
    start = time.perf_counter()
    done = 0
    for s in range(0, queries, BATCH):
        batch = vectors[s : min(s + BATCH, queries)]
        answers = knn_query(index, batch, K + 1)
        for qid, a in zip(ids[s : s + len(batch)].tolist(), answers, strict=True):
            _ = a.ids[a.ids != qid][:K]
        done += len(batch)
    return done / (time.perf_counter() - start), done


def throughput(n: int, exact_queries: int, approx_queries: int, recall_sample: int) -> list[dict]:
    vectors = clustered(n)
    ids = np.arange(n, dtype=np.int64)
    rows = []
    for kind, queries in (("flat", exact_queries), ("auto", approx_queries)):
        t = time.perf_counter()
        index = build_index(vectors, ids, index_type=kind)
        build_s = time.perf_counter() - t
        rate, done = export_rate(index, vectors, ids, queries)
        recall = None
        if kind != "flat":
            sample = np.random.default_rng(1).choice(n, recall_sample, replace=False)
            truth = brute_force_knn(vectors[sample], vectors, ids, K)
            found = knn_query(index, vectors[sample], K)
            recall = float(np.mean([len(np.intersect1d(a.ids, b.ids)) / K for a, b in zip(truth, found, strict=True)]))
        rows.append({"n": n, "index": type(index).__name__ if kind == "flat" else f"auto -> IVF{faiss_nlist(index)},Flat",
                     "build_s": build_s, "queries": done, "rate": rate, "full_s": n / rate, "recall": recall,
                     "extrapolated": done < n})
        print(rows[-1], flush=True)
        del index
    return rows


def faiss_nlist(index) -> int:
    import faiss

    return faiss.try_extract_index_ivf(index).nlist


def duplicates_memory(n: int, threshold: float) -> dict:
    """Peak RSS growth of range_search_batched over n vectors (1% planted near-duplicates)."""
    vectors = clustered(n, seed=2)
    rng = np.random.default_rng(3)
    chosen = rng.choice(n, 2 * (n // 100), replace=False)
    dup, source = chosen[: n // 100], chosen[n // 100 :]  # sources stay untouched
    noisy = vectors[source] + 0.05 / np.sqrt(D) * rng.standard_normal((len(dup), D), dtype=np.float32)
    vectors[dup] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    index = build_index(vectors, ids, index_type="flat")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    pairs = 0
    for s in range(0, n, 8192):  # the service's QUERY_CHUNK
        pairs += sum(1 for _ in range_search_batched(index, vectors[s : s + 8192], ids[s : s + 8192], threshold))
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "threshold": threshold, "pairs": pairs, "seconds": seconds,
            "rss_before_mb": before / 1024, "peak_delta_mb": (after - before) / 1024,
            "nxn_gb": n * n * 4 / 1e9}


def refresh_db(n: int, insert_n: int) -> dict:
    """neighbors_store at n articles (real service, exact index, temp SQLite) + insert cost at insert_n."""
    tmp = tempfile.mkdtemp(prefix="bench-neighbors-")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["LOOKALIKE_DATA_DIR"] = tmp
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/db.sqlite3"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import transaction

    from catalog.models import Article
    from similarity.models import Embedding
    from similarity.services.indexing.neighbors import neighbors_store
    from similarity.services.indexing.update import collect_inputs, index_update

    vectors = clustered(n, seed=4)
    Article.objects.bulk_create(
        [Article(article_id=f"A{i:07d}", category=f"c{i % 5}", image_url=f"http://x/{i}.jpg",
                 image_sha256="s", download_status="downloaded") for i in range(insert_n)], batch_size=5000)
    pks = list(Article.objects.order_by("pk").values_list("pk", flat=True))
    Embedding.objects.bulk_create(
        [Embedding(article_id=pk, model="bench@v1", image_sha256="s", dimension=D, vector=v.astype("<f4").tobytes())
         for pk, v in zip(pks[:n], vectors, strict=True)], batch_size=2000)
    index_update(inputs=collect_inputs("bench@v1"), model="bench", identity="bench@v1", index_type="flat")
    run = neighbors_store(k=K, progress=False)
    # Insert cost alone at insert_n articles x K rows, the same bulk_create path.
    from similarity.models import SimilarArticle
    from similarity.services.indexing.neighbors import INSERT_BATCH

    SimilarArticle.objects.all().delete()
    t = time.perf_counter()
    with transaction.atomic():
        for start in range(0, insert_n, INSERT_BATCH // K):
            SimilarArticle.objects.bulk_create(
                [SimilarArticle(article_id=pks[i], neighbor_id=pks[(i + r) % insert_n], rank=r, distance=0.1, build_name="b")
                 for i in range(start, min(start + INSERT_BATCH // K, insert_n)) for r in range(1, K + 1)],
                batch_size=INSERT_BATCH)
    insert_s = time.perf_counter() - t
    return {"n": n, "rows": run.rows, "seconds": run.seconds, **run.timings,
            "insert_n": insert_n, "insert_rows": insert_n * K, "insert_only_s": insert_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("throughput", "duplicates", "refresh", "all"), default="all")
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), Python {platform.python_version()}", flush=True)
    if args.part in ("throughput", "all"):
        for n in (int(s) for s in args.sizes.split(",")):
            exact_q = min(n, 20_000) if n <= 100_000 else 2_000
            throughput(n, exact_q, min(n, 100_000), 1000 if n <= 100_000 else 300)
    if args.part == "all":  # separate processes: clean RSS baselines
        for part in ("duplicates", "refresh"):
            subprocess.run([sys.executable, __file__, "--part", part], check=True)
    if args.part == "duplicates":
        print(duplicates_memory(100_000, 0.05), flush=True)
    if args.part == "refresh":
        print(refresh_db(20_000, 100_000), flush=True)



if __name__ == "__main__":
    main()
