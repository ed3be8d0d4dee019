"""Run every benchmark in turn (long: the 1M-vector runs take many minutes on 2 cores).

Usage: .venv/bin/python bench/run_all.py [name ...]   e.g. `bench/run_all.py download search`
Each benchmark prints its own table; docs/benchmarks.md holds the latest results.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = {
    "download": ["bench_download.py"],
    "index": ["bench_index.py"],
    "search": ["bench_search.py"],
    "api": ["bench_api.py"],
    "neighbors": ["bench_neighbors.py"],
    "embed": ["bench_embed.py"],
    "default-runtime": ["bench_default_runtime.py"],
}


def main() -> int:
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    failed = []
    for name in names:
        command = [sys.executable, str(BENCH / BENCHMARKS[name][0]), *BENCHMARKS[name][1:]]
        print(f"\n=== {name}: {' '.join(command)}", flush=True)
        if subprocess.run(command, cwd=BENCH.parent, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
