"""What a light client needs to embed locally for the current index: the model's identity,
its preprocessing as data, the thresholds of the verdicts, and its gated ONNX export.

The export served is the one the accuracy gate passed (``similarity.embedders``): the index's
own ONNX runtime when it was built on one, else the fp32 export gated against the torch
reference now (once per process). ``classic`` needs no file: the core computes it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike_core.classic import IMAGE_SIZE as CLASSIC_IMAGE_SIZE

from similarity.conf import similarity_settings
from similarity.embedders import embedder_for
from similarity.engine.embedders import CLASSIC_SPEC, EmbedderLoadError
from similarity.errors import ClientModelUnavailable
from similarity.selectors.search import index_runtime, query_embedder
from similarity.selectors.store import LoadedIndex, get_store

logger = logging.getLogger(__name__)

KIND_ONNX = "onnx"
KIND_CLASSIC = "classic"
ONNX_RUNTIMES = ("onnx", "onnx-int8")

MSG_NO_SPEC = (
    "{model!r} has no machine-readable preprocessing (its image processor does more than the "
    "core reproduces): clients cannot embed for this index; upload photos instead"
)
MSG_NO_EXPORT = "{model!r} has no ONNX export that passed the accuracy gate here: {reason}"
MSG_NOT_LOCAL = "the index's model cannot be loaded here: {reason}"


@dataclass(frozen=True)
class ModelFile:
    """The gated ONNX export on disk, with what a client checks it by."""

    path: Path
    sha256: str
    size: int
    runtime: str  # onnx or onnx-int8


@dataclass(frozen=True)
class ClientModel:
    """The current index as a client sees it, ready for GET /api/index/client/."""

    index_build: str
    model: str
    model_identity: str
    dimension: int
    kind: str  # onnx, classic
    image_size: int | None
    preprocessing: dict[str, Any] | None  # PixelSpec.as_dict(); None for classic
    duplicate_threshold: float
    similar_threshold: float
    max_k: int
    file: ModelFile | None  # None for classic

    def fingerprint(self) -> str:
        """An ETag for the description: changes whenever anything a client relies on does."""
        parts = [self.index_build, self.model_identity, str(self.dimension), self.kind,
                 repr(self.preprocessing), repr(self.duplicate_threshold),
                 repr(self.similar_threshold), str(self.max_k),
                 self.file.sha256 if self.file else ""]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def client_model_get() -> ClientModel:
    """The current index's client description; IndexNotReady without an index,
    ClientModelUnavailable (409) when no client can compute its vectors."""
    loaded = get_store().get()
    manifest = loaded.manifest
    conf = similarity_settings()
    kind, spec, file = _model_parts(loaded)
    return ClientModel(
        index_build=loaded.name,
        model=manifest.model,
        model_identity=manifest.model_identity,
        dimension=manifest.dimension,
        kind=kind,
        image_size=spec["image_size"],
        preprocessing=spec["spec"],
        duplicate_threshold=conf.duplicate_threshold_for(manifest.model),
        similar_threshold=conf.similar_threshold_for(manifest.model),
        max_k=conf.max_k,
        file=file,
    )


def _model_parts(loaded: LoadedIndex) -> tuple[str, dict[str, Any], ModelFile | None]:
    model = loaded.manifest.model
    if model == CLASSIC_SPEC:
        return KIND_CLASSIC, {"image_size": CLASSIC_IMAGE_SIZE, "spec": None}, None
    try:
        embedder = query_embedder(loaded)
    except EmbedderLoadError as exc:
        raise ClientModelUnavailable(MSG_NOT_LOCAL.format(reason=exc)) from exc
    spec = embedder.pixel_spec()
    if spec is None:
        raise ClientModelUnavailable(MSG_NO_SPEC.format(model=model))
    described = {"image_size": spec.image_size, "spec": spec.as_dict()}
    return KIND_ONNX, described, _gated_export(loaded)


def _gated_export(loaded: LoadedIndex) -> ModelFile:
    """The index's ONNX file when it runs on ONNX, else the fp32 export, gated now."""
    manifest = loaded.manifest
    runtime = index_runtime(loaded)
    if runtime not in ONNX_RUNTIMES:
        runtime = "onnx"
    try:
        provided = embedder_for(manifest.model, runtime=runtime,
                                identity=manifest.model_identity or None, strict=True)
    except EmbedderLoadError as exc:
        raise ClientModelUnavailable(MSG_NO_EXPORT.format(model=manifest.model,
                                                          reason=exc)) from exc
    path = getattr(provided.embedder, "model_path", None)
    if path is None:
        reason = f"the runtime chosen is {provided.runtime.runtime!r}"
        raise ClientModelUnavailable(MSG_NO_EXPORT.format(model=manifest.model, reason=reason))
    digest, size = file_digest(Path(path))
    return ModelFile(path=Path(path), sha256=digest, size=size, runtime=runtime)


_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of ``path``, hashed once per file version (path, size, mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        cached = _digests.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        cached = digest.hexdigest()
        with _digests_lock:
            _digests[key] = cached
    return cached, stat.st_size


