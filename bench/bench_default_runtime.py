"""Benchmark the default runtime: `build_index` before (torch) and after (auto) on real photos.

Each run is a fresh `manage.py` process on its own data directory and SQLite database, over
the same folder-imported catalog (default: the shared grocery photos), as a shop meets it:
    before            build_index --runtime torch  (the default until auto became it)
    after, cold       build_index   (auto on a machine that never ran it: exports ONNX,
                                     runs the accuracy gate, times the runtimes)
    after, new shop   build_index   (another data directory on the same machine, e.g. the
                                     shop's own catalog after `make demo`: the remembered choice)
The per-machine model cache (LOOKALIKE_MODEL_CACHE_DIR) starts empty in a scratch directory.
Wall time of the whole command (start-up, model load, calibration, embedding, indexing),
then the top-10 neighbours of every article exported from each index and compared.
Usage: .venv/bin/python bench/bench_default_runtime.py [--photos DIR] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from machine import cpu_model  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "realphotos" / "grocery" / "images"


def manage(data_dir: Path, *args: str) -> tuple[float, str]:
    """Run ``manage.py *args`` on ``data_dir``; (wall seconds, output). Exits on failure."""
    env = {**os.environ, "LOOKALIKE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
           "LOOKALIKE_MODEL_CACHE_DIR": str(data_dir.parent / "model-cache")}
    for name in ("DATABASE_URL", "REDIS_URL", "LOOKALIKE_RUNTIME", "LOOKALIKE_MODEL"):
        env.pop(name, None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: done, some files skipped
        sys.exit(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def catalog(data_dir: Path, photos: Path) -> None:
    manage(data_dir, "migrate", "--noinput")
    manage(data_dir, "import_folder", str(photos))


def neighbours(data_dir: Path) -> dict[str, list[str]]:
    out = data_dir / "neighbours.csv"
    manage(data_dir, "export_neighbors", "--k", "10", "--output", str(out), "--no-progress")
    ranked: dict[str, list[str]] = defaultdict(list)
    with out.open() as handle:
        for row in csv.DictReader(handle):
            ranked[row["article_id"]].append(row["neighbor_id"])
    return ranked


def build_timings(data_dir: Path) -> dict:
    """The last build's recorded phase timings (its own clock, inside the process)."""
    with sqlite3.connect(data_dir / "db.sqlite3") as db:
        (timings,) = db.execute(
            "SELECT timings FROM similarity_indexbuild ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return json.loads(timings)


def runtime_line(output: str) -> str:
    match = re.search(r"^Embedding runtime .*$", output, re.MULTILINE)
    return match.group(0) if match else "(no runtime line)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch directories.")
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"{args.photos} is missing: nothing to benchmark")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="bench-default-runtime-"))
    runs = {
        "before: build_index --runtime torch": (scratch / "before", ("--runtime", "torch")),
        "after: build_index (auto, cold machine)": (scratch / "cold", ()),
        "after: build_index (auto, new catalog, same machine)": (scratch / "shop", ()),
    }
    for data_dir, _args in runs.values():
        catalog(data_dir, args.photos)
    count = sum(1 for p in args.photos.rglob("*") if p.is_file())

    rows = []
    for label, (data_dir, build_args) in runs.items():
        seconds, output = manage(data_dir, "build_index", "--no-progress", *build_args)
        rows.append((label, seconds, runtime_line(output), build_timings(data_dir)))
    ranked = [neighbours(data_dir) for data_dir, _args in runs.values()]
    before = ranked[0]

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), Python {platform.python_version()}")
    print(f"Photos: {args.photos} ({count} files)\n")
    print("| run | wall s | vs before | load model s | choose runtime s | embed s | "
          "embed images/s | embed vs before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base_wall, base_embed = rows[0][1], rows[0][3]["embed_seconds"]
    for label, seconds, _line, timings in rows:
        embed = timings["embed_seconds"]
        print(f"| {label} | {seconds:.1f} | {base_wall / seconds:.2f}x | "
              f"{timings['load_model_seconds']:.1f} | {timings['runtime_seconds']:.1f} | "
              f"{embed:.1f} | {count / embed:.1f} | {base_embed / embed:.2f}x |")
    print()
    for label, _seconds, line, _timings in rows:
        print(f"{label}: {line}")
    identical = True
    for label, after in zip(list(runs)[1:], ranked[1:], strict=True):
        same_order = sum(before[a] == after.get(a) for a in before)
        same_set = sum(set(before[a]) == set(after.get(a, [])) for a in before)
        identical &= same_set == len(before)
        print(f"Top-10 neighbours, {label} vs before: {same_order}/{len(before)} articles "
              f"identical in order, {same_set}/{len(before)} as sets")
    if args.keep:
        print(f"Scratch kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
