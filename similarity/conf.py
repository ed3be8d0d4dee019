"""The one accessor for similarity settings (the LOOKALIKE dict), with defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from similarity.engine.embedders.specs import DEFAULT_MODEL, parse_model_spec

DEFAULTS: dict[str, object] = {
    "MODEL": DEFAULT_MODEL,
    "INDEX_TYPE": "flat",
    "BATCH_SIZE": 32,
    "DECODE_WORKERS": 2,
    "KEEP_BUILDS": 3,
    "MAX_K": 100,
    "DEFAULT_K": 10,
    "THREADS": 0,  # 0 = one per core
    "BUILD_STALE_SECONDS": 900,
    "RECALL_SAMPLE": 1000,
    # API: "open" (anyone may read) or "token" (token or session login required to read).
    "API_AUTH": "open",
    "UPLOAD_MAX_BYTES": 10 * 1024 * 1024,
    # Lower than DOWNLOAD_MAX_PIXELS: an upload is decoded while a client waits; 25 MP is a
    # 100 MB decode buffer at most, once per upload (reduced right away to the model's size).
    "UPLOAD_MAX_PIXELS": 25_000_000,
    "UPLOAD_THROTTLE": "60/min",  # DRF rate for image uploads per user or IP; "" = unlimited
    # Uploads decoded at once per process; more wait up to UPLOAD_WAIT_SECONDS, then get 503.
    "UPLOAD_CONCURRENCY": 2,
    "UPLOAD_WAIT_SECONDS": 5.0,
    # Text queries longer than this are refused with a 400 (CLIP reads at most 77 tokens).
    "TEXT_MAX_CHARS": 300,
    # Neighbors and duplicates (services/neighbors.py, services/duplicates.py).
    "STORE_NEIGHBORS": False,  # refresh the SimilarArticle table after each build (opt-in)
    "NEIGHBORS_K": 10,
    "NEIGHBORS_BATCH": 1024,  # query vectors per Faiss search call
    "DUPLICATE_THRESHOLD": None,  # cosine distance; None = the model family's default below
    # Supplier matching (services/matching.py): "similar" verdict at or under this distance;
    # None = the model family's default below.
    "SIMILAR_THRESHOLD": None,
    "MATCH_BATCH_SIZE": 64,  # supplier photos fetched, embedded and matched per batch
    # Zip uploads of supplier photos (admin): refused beyond these, before anything is used.
    "MATCH_ZIP_MAX_FILES": 10_000,
    "MATCH_ZIP_MAX_BYTES": 2 * 1024 * 1024 * 1024,  # uncompressed total, counted while read
    # Serving from a shared "indexes" storage (docs/scaling.md): how often each web process
    # asks the database which build is current (one primary-key query at most this often).
    "INDEX_CHECK_SECONDS": 2.0,
    # Distributed builds (services/distributed.py, docs/scaling.md "Distributed builds").
    "DISTRIBUTED_BUILDS": False,  # API/admin rebuilds fan out over the django-q2 cluster
    "SHARD_SIZE": 1000,  # articles per shard (download or embed)
    "SHARD_LEASE_SECONDS": 120,  # a claimed shard without progress for this long is re-run
    "EMBED_CLUSTER": "",  # django-q2 queue (Q_CLUSTER_NAME) of embed shards; "" = default
    "DEVICE": "cpu",  # torch device of the embedders: cpu, cuda, cuda:1 ...
}

# Types of the DEFAULTS keys whose default is None (LOOKALIKE_<KEY> parsing in settings.py;
# "" or "none" sets None). Other keys are parsed with the type of their default.
ENV_TYPES: dict[str, type] = {"DUPLICATE_THRESHOLD": float, "SIMILAR_THRESHOLD": float}

# Duplicate thresholds per model family (cosine distance, strict "<"). How each was chosen:
# README "Catalog similarity" and docs/benchmarks.md "Neighbors and duplicates".
DUPLICATE_THRESHOLDS: dict[str, float] = {
    # classic v2: on the labelled eval catalog (manage.py evaluate) 0.05 scores pair precision
    # 1.000 / recall 0.823; on the 567 real grocery photos (bench/calibrate_duplicates.py,
    # docs/benchmarks.md) 11 of 160,461 distinct-photo pairs fall under it while it finds
    # 98-100% of resized/recompressed, framed and mirrored copies (68% of 6% crops).
    "classic": 0.05,
    # efficientnet-lite0, same real-photo measurement: 2 of 160,461 distinct-photo pairs under
    # 0.05; finds 96% of JPEG-60 copies and 88% of mirrored ones but few framed or halved
    # copies (a CNN sees the frame and the blur): classic is the better near-copy detector.
    "efficientnet": 0.05,
    "clip": 0.05,  # not measurable offline (no weights here): conservative, documented guess
    "transformers": 0.05,  # same: conservative until measured on the shop's own labels
}

# "Similar" thresholds per model family (cosine distance, "<="): a supplier photo this close
# to its best match probably shows a product the shop sells, worth a look. How each was
# chosen: README "Matching supplier photos" and docs/benchmarks.md "Supplier matching".
SIMILAR_THRESHOLDS: dict[str, float] = {
    # classic v2 on generated packshots: resized/recompressed copies <= 0.03, other products
    # 0.03-0.38 (about half under 0.25), noise ~0.69; real shop photos of the right product
    # are no closer than wrong ones (docs/benchmarks.md "Supplier matching").
    "classic": 0.25,
    # efficientnet-lite0 on generated packshots: copies <= 0.05, other products >= 0.065 (half
    # under 0.1: white shapes look alike to it), noise ~0.75; real shop photos of the right
    # product 0.43-0.63. Not calibrated (no labelled same-product, other-shoot photos offline).
    "efficientnet": 0.25,
    "clip": 0.25,  # not measurable offline (no weights here): a guess, set it per shop
    "transformers": 0.25,  # same: a guess until measured on the shop's own photos
}

SIMILAR_THRESHOLD_FALLBACK = 0.25  # a family without its own entry

API_AUTH_MODES = ("open", "token")


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
    api_auth: str = "open"
    upload_max_bytes: int = 10 * 1024 * 1024
    upload_max_pixels: int = 25_000_000
    upload_throttle: str = "60/min"
    upload_concurrency: int = 2
    upload_wait_seconds: float = 5.0
    text_max_chars: int = 300
    store_neighbors: bool = False
    neighbors_k: int = 10
    neighbors_batch: int = 1024
    duplicate_threshold: float | None = None
    model_explicit: bool = False  # MODEL set in settings (LOOKALIKE_MODEL), not the default
    similar_threshold: float | None = None
    match_batch_size: int = 64
    match_zip_max_files: int = 10_000
    match_zip_max_bytes: int = 2 * 1024 * 1024 * 1024
    index_check_seconds: float = 2.0
    index_cache_root: Path = Path("index-cache")
    distributed_builds: bool = False
    shard_size: int = 1000
    shard_lease_seconds: int = 120
    embed_cluster: str = ""
    device: str = "cpu"

    def similar_threshold_for(self, model: str) -> float:
        """The configured SIMILAR_THRESHOLD, else the default of ``model``'s family."""
        if self.similar_threshold is not None:
            return self.similar_threshold
        return SIMILAR_THRESHOLDS.get(model_family(model), SIMILAR_THRESHOLD_FALLBACK)

    def duplicate_threshold_for(self, model: str) -> float:
        """The configured DUPLICATE_THRESHOLD, else the default of ``model``'s family."""
        if self.duplicate_threshold is not None:
            return self.duplicate_threshold
        return DUPLICATE_THRESHOLDS[model_family(model)]


def model_family(model: str) -> str:
    """classic, efficientnet, transformers or clip (sentence-transformers names and paths)."""
    return parse_model_spec(model).family


def similarity_settings() -> SimilaritySettings:
    """Current similarity settings; read on every call so tests can override settings."""
    configured = getattr(settings, "LOOKALIKE", {})
    values = {**DEFAULTS, **configured}
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
        api_auth=_api_auth(values["API_AUTH"]),
        upload_max_bytes=int(values["UPLOAD_MAX_BYTES"]),
        upload_max_pixels=int(values["UPLOAD_MAX_PIXELS"]),
        upload_throttle=str(values["UPLOAD_THROTTLE"] or ""),
        upload_concurrency=_at_least_one("UPLOAD_CONCURRENCY", values["UPLOAD_CONCURRENCY"]),
        upload_wait_seconds=float(values["UPLOAD_WAIT_SECONDS"]),
        text_max_chars=_at_least_one("TEXT_MAX_CHARS", values["TEXT_MAX_CHARS"]),
        store_neighbors=bool(values["STORE_NEIGHBORS"]),
        neighbors_k=int(values["NEIGHBORS_K"]),
        neighbors_batch=int(values["NEIGHBORS_BATCH"]),
        duplicate_threshold=(
            None if values["DUPLICATE_THRESHOLD"] is None else float(values["DUPLICATE_THRESHOLD"])
        ),
        model_explicit="MODEL" in configured,
        similar_threshold=(
            None if values["SIMILAR_THRESHOLD"] is None else float(values["SIMILAR_THRESHOLD"])
        ),
        match_batch_size=_at_least_one("MATCH_BATCH_SIZE", values["MATCH_BATCH_SIZE"]),
        match_zip_max_files=_at_least_one("MATCH_ZIP_MAX_FILES", values["MATCH_ZIP_MAX_FILES"]),
        match_zip_max_bytes=_at_least_one("MATCH_ZIP_MAX_BYTES", values["MATCH_ZIP_MAX_BYTES"]),
        index_check_seconds=float(values["INDEX_CHECK_SECONDS"]),
        index_cache_root=Path(settings.DATA_DIR) / "index-cache",
        distributed_builds=bool(values["DISTRIBUTED_BUILDS"]),
        shard_size=_at_least_one("SHARD_SIZE", values["SHARD_SIZE"]),
        shard_lease_seconds=_at_least_one("SHARD_LEASE_SECONDS", values["SHARD_LEASE_SECONDS"]),
        embed_cluster=str(values["EMBED_CLUSTER"] or "").strip(),
        device=str(values["DEVICE"] or "cpu").strip().lower(),
    )


def _at_least_one(name: str, value: object) -> int:
    number = int(str(value))
    if number < 1:
        raise ImproperlyConfigured(f"LOOKALIKE_{name} must be >= 1; got {value!r}")
    return number


def _api_auth(value: object) -> str:
    mode = str(value).strip().lower()
    if mode not in API_AUTH_MODES:
        raise ImproperlyConfigured(
            f"LOOKALIKE_API_AUTH must be one of {', '.join(API_AUTH_MODES)}; got {value!r}"
        )
    return mode


# Embedding runtimes: their own small block, read from the same LOOKALIKE dict.
RUNTIME_DEFAULTS: dict[str, object] = {
    "RUNTIME": "torch",  # torch (fp32 reference), torch-bf16, onnx, onnx-int8 or auto
    "RUNTIME_MIN_COSINE": 0.995,  # accuracy gate: mean cosine to torch fp32 on calibration
    "RUNTIME_MIN_OVERLAP": 0.9,  # accuracy gate: top-10 neighbor overlap on calibration
    "RUNTIME_CALIBRATION_IMAGES": 64,
}


@dataclass(frozen=True)
class RuntimeSettings:
    runtime: str
    min_cosine: float
    min_overlap: float
    calibration_images: int
    onnx_cache_dir: Path


def runtime_settings() -> RuntimeSettings:
    """Embedding-runtime settings (LOOKALIKE dict; settings.py reads LOOKALIKE_RUNTIME)."""
    values = {**RUNTIME_DEFAULTS, **getattr(settings, "LOOKALIKE", {})}
    return RuntimeSettings(
        runtime=str(values["RUNTIME"]).strip().lower(),
        min_cosine=float(values["RUNTIME_MIN_COSINE"]),
        min_overlap=float(values["RUNTIME_MIN_OVERLAP"]),
        calibration_images=int(values["RUNTIME_CALIBRATION_IMAGES"]),
        onnx_cache_dir=Path(settings.DATA_DIR) / "onnx-cache",
    )
