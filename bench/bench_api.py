"""HTTP load benchmark of GET /api/articles/<id>/similar/ at 100k articles, vs a bare DRF view.

Serves the API with gunicorn on 127.0.0.1 and loads it with wrk from its own process. By
default the server is the shipped one: ``gunicorn -c config/gunicorn.py`` (what `make serve`
runs); ``--servers shipped,sync`` adds the same config with sync workers for comparison.
Setup: 100k Article rows plus random unit vectors (d=512) under the model "bench-random",
indexed with index_update(index_type="auto"): a benchmark of the serving path, not of
embedding. ``--setup-only --keep DIR`` prepares the data (outside an exclusive CPU hold).
Usage:
    .venv/bin/python bench/bench_api.py [--articles 100000] [--duration 15] [--connections 8]
        [--servers shipped[,sync]] [--database-url URL] [--keep DIR] [--setup-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from machine import cpu_model  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIMENSION = 512
MODEL = "bench-random"
CATEGORIES = 20
K = 10

WRK_SCRIPT = """
local ids = {}
local n = %(count)d
local prefix = "%(prefix)s"
local suffix = "%(suffix)s"
local i = 0
math.randomseed(%(seed)d)
for j = 1, 4096 do ids[j] = math.random(0, n - 1) end
request = function()
  i = i + 1
  local path = prefix .. string.format("B%%07d", ids[(i %% 4096) + 1]) .. suffix
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON{\\"requests\\": %%d, \\"seconds\\": %%f, \\"errors\\": %%d, \\"non2xx\\": %%d, " ..
    "\\"p50_ms\\": %%f, \\"p99_ms\\": %%f}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup_data(count: int, env: dict[str, str]) -> dict[str, object]:
    """Migrate, insert ``count`` articles and random embeddings, build the auto index."""
    os.environ.update(env)
    import django

    django.setup()
    import numpy as np
    from django.core.management import call_command
    from django.db import connection, transaction

    from catalog.models import Article
    from similarity.engine.index import Timeit
    from similarity.models import Embedding
    from similarity.services.indexing.update import collect_inputs, index_update

    call_command("migrate", verbosity=0)
    timings: dict[str, float] = {}
    with Timeit(f"Inserting {count} articles and embeddings") as timer:
        rng = np.random.default_rng(0)
        batch = 5000
        for start in range(0, count, batch):
            rows = range(start, min(start + batch, count))
            with transaction.atomic():
                articles = Article.objects.bulk_create(
                    Article(
                        article_id=f"B{n:07d}",
                        title=f"Bench article {n}",
                        category=f"category-{n % CATEGORIES}",
                        image_url=f"https://shop.example/images/B{n:07d}.jpg",
                        image=f"images/bench/{n}.jpg",
                        image_sha256=f"{n:064x}",
                        download_status=Article.DownloadStatus.DOWNLOADED,
                    )
                    for n in rows
                )
                if connection.vendor == "sqlite" or articles[0].pk is None:
                    articles = list(
                        Article.objects.filter(
                            article_id__in=[f"B{n:07d}" for n in rows]
                        ).only("pk", "image_sha256")
                    )
                vectors = rng.standard_normal((len(articles), DIMENSION), dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                Embedding.objects.bulk_create(
                    Embedding(
                        article_id=article.pk,
                        model=MODEL,
                        image_sha256=article.image_sha256,
                        dimension=DIMENSION,
                        vector=vector.astype("<f4").tobytes(),
                    )
                    for article, vector in zip(articles, vectors, strict=True)
                )
    timings["insert_seconds"] = round(timer.seconds, 1)
    with Timeit("Collecting inputs") as timer:
        inputs = collect_inputs(MODEL)
    timings["collect_seconds"] = round(timer.seconds, 1)
    outcome = index_update(inputs=inputs, model=MODEL, identity=MODEL, index_type="auto")
    timings["index_seconds"] = outcome.timings.get("index_seconds", 0.0)
    connection.close()
    return {
        "count": outcome.count,
        "factory": outcome.manifest["factory"],
        "recall_at_10": outcome.recall_at_10,
        "timings": timings,
    }


# Each server is the shipped config file; a variant overrides only what its name says.
SERVERS: dict[str, list[str]] = {
    "shipped": [],
    "sync": ["--worker-class", "sync", "--threads", "1"],  # threads > 1 would mean gthread
    "keepalive": ["--keep-alive", "2"],  # gunicorn's default keep-alive, before it was turned off
}


def start_server(port: int, env: dict[str, str], server_name: str) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "-c",
        str(ROOT / "config/gunicorn.py"),
        "config.wsgi",
        *SERVERS[server_name],
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/index/", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("gunicorn did not come up within 60 s")


def check_answers(port: int, count: int) -> None:
    real = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/articles/B0000001/similar/?k={K}"))
    bare = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/bare/B0000001/similar/"))
    assert len(real["results"]) == K and real["results"][0]["article_id"] == "B0000001", real
    assert set(real) == set(bare) and set(real["results"][0]) == set(bare["results"][0])


def run_wrk(port: int, prefix: str, suffix: str, count: int, args: argparse.Namespace, seed: int) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % {"count": count, "prefix": prefix, "suffix": suffix, "seed": seed})
    try:
        command = [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        script.unlink()
    line = next(line for line in output.splitlines() if line.startswith("JSON"))
    result = json.loads(line[4:])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def bench_server(server_name: str, env: dict[str, str], count: int, args: argparse.Namespace) -> dict:
    port = free_port()
    server = start_server(port, env, server_name)
    try:
        check_answers(port, count)
        real_path = ("/api/articles/", f"/similar/?k={K}")
        bare_path = ("/bench/bare/", "/similar/")
        # Warm-up: every worker loads the index (mmap) and opens its DB connection.
        for prefix, suffix in (real_path, bare_path):
            run_wrk(port, prefix, suffix, count, argparse.Namespace(**{**vars(args), "duration": 3}), seed=1)
        rows = {}
        for label, (prefix, suffix) in (("bare", bare_path), ("real", real_path)):
            rows[label] = run_wrk(port, prefix, suffix, count, args, seed=2)
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--servers", default="shipped", help=f"comma-separated, of {', '.join(SERVERS)}"
    )
    parser.add_argument("--setup-only", action="store_true", help="prepare --keep DIR and stop")
    parser.add_argument("--database-url", default="", help="default: a temp SQLite file")
    parser.add_argument("--keep", default="", help="reuse/keep this data dir (skips setup)")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args()
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in servers if name not in SERVERS]
    if unknown or not servers:
        sys.exit(f"--servers: unknown {unknown or args.servers!r}; choose from {', '.join(SERVERS)}")
    if args.setup_only and not args.keep:
        sys.exit("--setup-only needs --keep DIR")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")

    data_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-api-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "bench.bench_settings",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    try:
        if args.keep and (data_dir / "index" / "CURRENT").exists():
            setup = json.loads((data_dir / "setup.json").read_text())
        else:
            setup = setup_data(args.articles, env)
            (data_dir / "setup.json").write_text(json.dumps(setup))
        print(f"Setup: {setup}")
        if args.setup_only:
            return
        results = {}
        for server_name in servers:
            rows = bench_server(server_name, env, setup["count"], args)
            results[server_name] = rows
            print_table(server_name, rows)
        report = {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "database": "postgresql" if args.database_url else "sqlite",
            "setup": setup,
            "args": vars(args),
            "results": results,
        }
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def print_table(server_name: str, rows: dict[str, dict]) -> None:
    bare = rows["bare"]["rps"]
    print(f"\ngunicorn -c config/gunicorn.py {' '.join(SERVERS[server_name])} ({server_name})")
    print("| View | req/s | p50 ms | p99 ms | errors | vs bare |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        print(
            f"| {label} | {row['rps']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['errors'] + row['non2xx']} | {row['rps'] / bare:.2f}x |"
        )



if __name__ == "__main__":
    main()
