"""Benchmark-only settings: production settings with the bench URLconf (adds a bare view)."""

import os

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bench_urls"

# Bench-only knob to compare Faiss thread counts in the serving process (0 = product default).
if os.environ.get("BENCH_FAISS_THREADS"):
    LOOKALIKE = {**LOOKALIKE, "THREADS": int(os.environ["BENCH_FAISS_THREADS"])}  # noqa: F405
