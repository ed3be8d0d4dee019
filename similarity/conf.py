"""The similarity settings: one typed object over the LOOKALIKE dict, built once per process.

``similarity_settings()`` is the one accessor (DRF's ``api_settings`` shape, machinery in
``catalog.conf``): every LOOKALIKE key similarity reads is a field of ``SimilaritySettings``
with its default written there and nowhere else, beside the Django settings the app reads
(the data directory, the django-q2 cluster's name and timeout, the broker, the metrics
token) and the paths derived from them. A settings change (``override_settings``, the
pytest ``settings`` fixture) rebuilds it on the next read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from catalog.conf import (
    NAMESPACE,
    SettingsCache,
    at_least_one,
    lookalike_values,
    setting,
    setting_keys,
)
from similarity.engine.embedders.registry import family_thresholds
from similarity.engine.embedders.specs import DEFAULT_MODEL, parse_model_spec

API_AUTH_MODES = ("open", "token")


def _api_auth(key: str, value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in API_AUTH_MODES:
        raise ImproperlyConfigured(
            f"LOOKALIKE_{key} must be one of {', '.join(API_AUTH_MODES)}; got {value!r}"
        )
    return mode


def _cores(key: str, value: Any) -> int:
    return int(value) or (os.cpu_count() or 1)


def _lower(key: str, value: Any) -> str:
    return str(value).strip().lower()


@dataclass(frozen=True, kw_only=True)
class SimilaritySettings:
    """Everything similarity reads from the settings. LOOKALIKE keys: ``setting(default)``
    fields (key = field name in upper case; config/settings.py reads LOOKALIKE_<KEY>)."""

    # From Django's settings (not LOOKALIKE keys).
    data_dir: Path  # DATA_DIR: indexes, caches and match runs live under it
    model_cache_dir: Path | None = None  # MODEL_CACHE_DIR: per machine (None: DATA_DIR)
    task_queue: str = "default"  # Q_CLUSTER["name"]: the default django-q2 cluster's queue
    task_timeout: float = 3600.0  # Q_CLUSTER["timeout"]: seconds a task may run
    broker: str = "orm"  # "redis" when REDIS_URL is set, else django-q2's ORM broker
    metrics_token: str = ""  # METRICS_TOKEN: /metrics answers non-loopback clients with it
    model_explicit: bool = False  # MODEL set in settings (LOOKALIKE_MODEL), not the default

    model: str = setting(DEFAULT_MODEL)
    index_type: str = setting("flat")
    batch_size: int = setting(32)
    decode_workers: int = setting(2)
    keep_builds: int = setting(3)
    max_k: int = setting(100)
    default_k: int = setting(10)
    threads: int = setting(0, clean=_cores, zero=True)  # 0 = one per core
    build_stale_seconds: int = setting(900)
    recall_sample: int = setting(1000, zero=True)  # 0 = no recall estimate
    # API: "open" (anyone may read) or "token" (token or session login required to read).
    api_auth: str = setting("open", clean=_api_auth)
    upload_max_bytes: int = setting(10 * 1024 * 1024)
    # Lower than DOWNLOAD_MAX_PIXELS: an upload is decoded while a client waits; 25 MP is a
    # 100 MB decode buffer at most, once per upload (reduced right away to the model's size).
    upload_max_pixels: int = setting(25_000_000)
    upload_throttle: str = setting("60/min")  # DRF rate for uploads per user or IP; "" = none
    # Uploads decoded at once per process; more wait up to UPLOAD_WAIT_SECONDS, then get 503.
    upload_concurrency: int = setting(2, clean=at_least_one)
    upload_wait_seconds: float = setting(5.0)
    # Text queries longer than this are refused with a 400 (CLIP reads at most 77 tokens).
    text_max_chars: int = setting(300, clean=at_least_one)
    # Neighbors and duplicates (selectors/neighbors.py, selectors/duplicates.py).
    store_neighbors: bool = setting(False)  # refresh SimilarArticle after each build (opt-in)
    neighbors_k: int = setting(10)
    neighbors_batch: int = setting(1024)  # query vectors per Faiss search call
    duplicate_threshold: float | None = setting(None)  # cosine; None = the family's default
    # Supplier matching: "similar" verdict at or under this distance; None = the family's.
    similar_threshold: float | None = setting(None)
    match_batch_size: int = setting(64, clean=at_least_one)  # photos per fetch/embed batch
    # Verification of image queries with local features (engine/verification): on by
    # default; off gives the global ranking and distance-only verdicts.
    verify: bool = setting(True)
    local_features_cache: int = setting(2048, clean=at_least_one)  # features held in memory
    # Zip uploads of supplier photos (admin): refused beyond these, before anything is used.
    match_zip_max_files: int = setting(10_000, clean=at_least_one)
    match_zip_max_bytes: int = setting(2 * 1024**3, clean=at_least_one)  # uncompressed total
    # Serving from a shared "indexes" storage (docs/scaling.md): how often each web process
    # asks the database which build is current (one primary-key query at most this often).
    index_check_seconds: float = setting(2.0)
    # Distributed builds (docs/scaling.md "Distributed builds").
    distributed_builds: bool = setting(False)  # API/admin rebuilds fan out over django-q2
    shard_size: int = setting(1000, clean=at_least_one)  # articles per shard
    shard_lease_seconds: int = setting(120, clean=at_least_one)  # then a shard is re-run
    embed_cluster: str = setting("")  # django-q2 queue (Q_CLUSTER_NAME) of embed shards
    device: str = setting("cpu", clean=_lower)  # torch device: cpu, cuda, cuda:1 ...
    # Embedding runtimes: torch (fp32 reference), torch-bf16, onnx, onnx-int8 or auto.
    # auto: the fastest runtime that passes the gate here, measured once per machine + model.
    runtime: str = setting("auto", clean=_lower)
    runtime_min_cosine: float = setting(0.995)  # gate: mean cosine to torch fp32
    runtime_min_overlap: float = setting(0.9)  # gate: top-10 neighbor overlap
    runtime_calibration_images: int = setting(64)

    @property
    def index_root(self) -> Path:
        """Where builds are written (and, with the local storage, served from)."""
        return self.data_dir / "index"

    @property
    def local_features_root(self) -> Path:
        """Catalog images' local features, one file per image content (not per build)."""
        return self.data_dir / "local_features"

    @property
    def index_cache_root(self) -> Path:
        """Where a web node keeps builds fetched from a shared storage."""
        return self.data_dir / "index-cache"

    @property
    def onnx_cache_dir(self) -> Path:
        """Exported ONNX models, per model identity and library versions (per machine)."""
        return (self.model_cache_dir or self.data_dir) / "onnx-cache"

    @property
    def runtime_choice_dir(self) -> Path:
        """`auto`'s measured choices, per model identity and machine (beside the exports)."""
        return (self.model_cache_dir or self.data_dir) / "auto-choices"

    def similar_threshold_for(self, model: str) -> float:
        """The configured SIMILAR_THRESHOLD, else the default of ``model``'s family."""
        if self.similar_threshold is not None:
            return self.similar_threshold
        return family_thresholds(model_family(model)).similar

    def duplicate_threshold_for(self, model: str) -> float:
        """The configured DUPLICATE_THRESHOLD, else the default of ``model``'s family."""
        if self.duplicate_threshold is not None:
            return self.duplicate_threshold
        return family_thresholds(model_family(model)).duplicate


SIMILARITY_KEYS = setting_keys(SimilaritySettings)  # the environment parser and checks read these


def model_family(model: str) -> str:
    """The name of ``model``'s registered family (classic, efficientnet, transformers, clip)."""
    return parse_model_spec(model).family


def _optional_path(value: object) -> Path | None:
    return Path(str(value)) if value else None


def _similarity_settings_build() -> SimilaritySettings:
    configured = getattr(settings, NAMESPACE, {})
    cluster = getattr(settings, "Q_CLUSTER", {})
    return SimilaritySettings(
        data_dir=Path(settings.DATA_DIR),
        model_cache_dir=_optional_path(getattr(settings, "MODEL_CACHE_DIR", None)),
        task_queue=str(cluster.get("name") or "default"),
        task_timeout=float(cluster.get("timeout") or 3600),
        broker="redis" if getattr(settings, "REDIS_URL", "") else "orm",
        metrics_token=str(getattr(settings, "METRICS_TOKEN", "") or ""),
        model_explicit="MODEL" in configured,
        **lookalike_values(SimilaritySettings, configured),
    )


_similarity = SettingsCache(
    _similarity_settings_build,
    sources={NAMESPACE, "DATA_DIR", "MODEL_CACHE_DIR", "Q_CLUSTER", "REDIS_URL", "METRICS_TOKEN"},
)


def similarity_settings() -> SimilaritySettings:
    """The similarity settings, built once per process (rebuilt after a settings change)."""
    return _similarity.get()
