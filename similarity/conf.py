"""The one accessor for similarity settings (the LOOKALIKE dict), with defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

DEFAULTS: dict[str, object] = {
    "MODEL": "clip-ViT-B-32",
    "INDEX_TYPE": "flat",
    "BATCH_SIZE": 32,
    "DECODE_WORKERS": 2,
    "KEEP_BUILDS": 3,
    "MAX_K": 100,
    "DEFAULT_K": 10,
    "THREADS": 0,  # 0 = one per core
    "BUILD_STALE_SECONDS": 900,
    "RECALL_SAMPLE": 1000,
}


@dataclass(frozen=True)
class SimilaritySettings:
    model: str
    index_type: str
    batch_size: int
    decode_workers: int
    keep_builds: int
    max_k: int
    default_k: int
    threads: int
    build_stale_seconds: int
    recall_sample: int
    index_root: Path


def similarity_settings() -> SimilaritySettings:
    """Current similarity settings; read on every call so tests can override settings."""
    values = {**DEFAULTS, **getattr(settings, "LOOKALIKE", {})}
    threads = int(values["THREADS"]) or (os.cpu_count() or 1)
    return SimilaritySettings(
        model=str(values["MODEL"]),
        index_type=str(values["INDEX_TYPE"]),
        batch_size=int(values["BATCH_SIZE"]),
        decode_workers=int(values["DECODE_WORKERS"]),
        keep_builds=int(values["KEEP_BUILDS"]),
        max_k=int(values["MAX_K"]),
        default_k=int(values["DEFAULT_K"]),
        threads=threads,
        build_stale_seconds=int(values["BUILD_STALE_SECONDS"]),
        recall_sample=int(values["RECALL_SAMPLE"]),
        index_root=Path(settings.DATA_DIR) / "index",
    )
