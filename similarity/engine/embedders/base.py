"""The Embedder interface, its errors, and helpers shared by the model backends."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np
from lookalike_core.pixels import PixelSpec
from lookalike_core.vectors import l2_normalise as l2_normalise  # the embedders import it here
from PIL import Image

logger = logging.getLogger(__name__)

T = TypeVar("T")

Batch = Any  # whatever preprocess() returns and embed_preprocessed() accepts (tensor, array)

HUB_PROBE_TIMEOUT_SECONDS = 3.0
HOW_TO_PROVIDE_MODEL = (
    "pass a local model directory as the spec, or pre-populate the Hugging Face cache "
    "(`hf download {repo}` on a connected machine, then copy HF_HOME) and set HF_HUB_OFFLINE=1"
)
NOT_AVAILABLE_OFFLINE = (
    "Cannot load embedding model {spec!r}: not a local directory and not in the Hugging Face "
    "cache ({reason}); " + HOW_TO_PROVIDE_MODEL
)
MISSING_DIRECTORY = "Cannot load embedding model {spec!r}: directory {path} does not exist"
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack"}
_SAMPLE_BYTES = 1 << 20


class EmbedderLoadError(RuntimeError):
    """The model could not be loaded; the message alone tells the user what to do."""


class TextNotSupportedError(TypeError):
    """This embedder only embeds images."""


class Embedder(ABC):
    """Turns images (and maybe texts) into L2-normalised float32 vectors of one dimension.

    ``preprocess`` (CPU work, thread-safe, fine in decode threads) is split from
    ``embed_preprocessed`` (the forward pass) so a pipeline can overlap the two.
    """

    name: str  # canonical model spec, e.g. "classic", "clip-ViT-B-32", "transformers:/models/dino"
    dimension: int
    supports_text: bool = False
    image_size: int | None = None  # smallest side worth decoding (JPEG draft mode); None = full

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        """Model inputs for RGB ``images`` (resize, normalise): safe to call from worker threads."""

    @abstractmethod
    def _forward(self, batch: Batch) -> np.ndarray:
        """Raw (n, dimension) vectors for a non-empty preprocessed batch."""

    @abstractmethod
    def identity(self) -> str:
        """Name plus a fingerprint of the weights: equal identities give equal vectors."""

    def embed_preprocessed(self, batch: Batch) -> np.ndarray:
        """(n, dimension) float32, C-contiguous, L2-normalised rows for a preprocessed batch."""
        return l2_normalise(self._forward(batch))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dimension) float32, C-contiguous, L2-normalised rows, one per RGB image."""
        if len(images) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.embed_preprocessed(self.preprocess(images))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimension) vectors in the image space, for text-to-image search."""
        raise TextNotSupportedError(f"the {self.name!r} embedder cannot embed text, only images")

    def preprocessing(self) -> dict[str, Any]:
        """How images become model inputs, for clients that embed locally (GET /api/index/).

        Keys: ``client_computable`` (whether a client can reproduce the vectors with the
        model's public weights and these steps), ``image_size``, ``resize``, ``crop``,
        ``resample``, ``rescale``, ``mean``, ``std``, ``colour_order``, ``layout``, a
        one-line ``description`` and ``spec`` (``pixel_spec()`` as JSON, or null).
        Backends describe their own pipeline; this default says nothing can be promised.
        """
        return preprocessing_description(
            client_computable=False,
            description=f"{type(self).__name__} does not describe its preprocessing; "
            "embed with this package (similarity.engine.embedders.load_embedder)",
        )

    def pixel_spec(self) -> PixelSpec | None:
        """The machine-readable preprocessing the core runs for this model (None: not one).

        When set, ``preprocess`` is ``lookalike_core.pixels.PixelPreprocessor(spec)`` and
        a client running the same spec and the model's ONNX export gets the same vectors.
        """
        return None

    def image_module(self) -> Any | None:
        """A torch module from ``pixel_values`` to ``_forward``'s raw vectors (for ONNX export).

        None when the model has no such module (weight-free embedders, multi-input models).
        """
        return None

    def pixel_values(self, batch: Batch) -> Any:
        """The pixel tensor in a preprocessed batch: the image module's only input."""
        raise NotImplementedError(f"{type(self).__name__} has no pixel tensor to export")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} d={self.dimension}>"


def preprocessing_description(
    *,
    client_computable: bool,
    description: str,
    image_size: int | None = None,
    resize: str = "",
    crop: str = "",
    resample: str = "",
    rescale: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    colour_order: str = "RGB",
    layout: str = "",
    spec: PixelSpec | None = None,
) -> dict[str, Any]:
    """The one shape of ``Embedder.preprocessing()`` (every key present, JSON-ready).

    ``spec``: the machine-readable form (``PixelSpec.as_dict()``) the client executes.
    """
    return {
        "client_computable": client_computable,
        "image_size": image_size,
        "resize": resize,
        "crop": crop,
        "resample": resample,
        "rescale": rescale,
        "mean": None if mean is None else [float(value) for value in mean],
        "std": None if std is None else [float(value) for value in std],
        "colour_order": colour_order,
        "layout": layout,
        "description": description,
        "spec": spec.as_dict() if spec is not None else None,
    }


_torch_lock = threading.Lock()
_torch_threads: int | None = None


def configure_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: all cores) once per process; returns the count."""
    global _torch_threads
    wanted = threads or os.cpu_count() or 1
    if wanted <= 0:
        raise ValueError(f"threads must be > 0; got {threads}")
    with _torch_lock:
        if _torch_threads is None or (threads is not None and wanted != _torch_threads):
            import torch

            torch.set_num_threads(wanted)
            _torch_threads = wanted
        return _torch_threads


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids contacting the hub."""
    return any(
        os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds.

    Without it, huggingface_hub retries an unreachable hub for over a minute per file.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def local_model_dir(spec: str, *, label: str | None = None) -> Path | None:
    """The directory ``spec`` names, None if it is a hub id; error if it is a missing path."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    # Hub ids are "name" or "org/name"; anything else can only be meant as a path.
    looks_like_path = (
        spec.startswith(("/", ".", "~"))
        or spec.count("/") > 1
        or (os.sep != "/" and os.sep in spec)
    )
    if looks_like_path:
        raise EmbedderLoadError(MISSING_DIRECTORY.format(spec=label or spec, path=path.absolute()))
    return None


def load_pretrained(
    spec: str,
    load: Callable[[str, bool], T],
    *,
    repo_ids: Sequence[str] = (),
    label: str | None = None,
) -> tuple[T, Path | None]:
    """Run ``load(name_or_path, local_files_only)`` offline-first; EmbedderLoadError on failure.

    A local directory loads directly. A hub id loads from the HF cache; only when it is
    not cached, HF_HUB_OFFLINE is unset and the hub answers a quick probe does it download.
    ``repo_ids`` are the hub repos ``spec`` may resolve to (to tell "not cached" from
    "cached but broken"); ``label`` is the spec as the user wrote it, for messages.
    Returns the loaded object and its local directory (None for hub ids).
    """
    label = label or spec
    repo_ids = list(repo_ids) or [spec]
    directory = local_model_dir(spec, label=label)
    if directory is not None:
        try:
            return load(str(directory), True), directory
        except Exception as error:
            raise EmbedderLoadError(
                f"Cannot load embedding model {label!r} from {directory}: {_first_line(error)}"
            ) from error
    snapshot = hub_snapshot(repo_ids)
    if snapshot is None and (hub_offline() or not hub_reachable()):
        # Neither cached nor downloadable: say so before importing the model's library (the
        # default model's fallback on a machine without it costs seconds otherwise).
        reason = (
            "HF_HUB_OFFLINE is set"
            if hub_offline()
            else "the Hugging Face hub is unreachable from this machine"
        )
        raise EmbedderLoadError(
            NOT_AVAILABLE_OFFLINE.format(spec=label, reason=reason, repo=repo_ids[0])
        )
    try:
        return load(spec, True), None
    except Exception as error:
        cached_error = error
    if snapshot is not None:
        raise EmbedderLoadError(
            f"Cannot load embedding model {label!r} from the Hugging Face cache ({snapshot}): "
            f"{_first_line(cached_error)}"
        ) from cached_error
    try:
        return load(spec, False), None
    except Exception as error:
        raise EmbedderLoadError(
            f"Cannot load embedding model {label!r} from the Hugging Face hub: "
            f"{_first_line(error)}; check the name, or "
            + HOW_TO_PROVIDE_MODEL.format(repo=repo_ids[0])
        ) from error


def hub_snapshot(repo_ids: Sequence[str]) -> Path | None:
    """The cached snapshot directory of the first of ``repo_ids`` in the HF cache, if any."""
    from huggingface_hub import snapshot_download

    for repo_id in repo_ids:
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception as error:  # not cached, or not a valid repo id
            logger.debug("%s is not in the Hugging Face cache: %s", repo_id, error)
    return None


def directory_fingerprint(directory: Path) -> str:
    """A short hash of a model directory's files: configs by content, weights by size + samples.

    Weight files are sampled (first, middle and last MiB, plus the size) rather than read
    whole, so fingerprinting a 1 GB checkpoint is instant; unlike mtimes, the fingerprint
    survives copying the model elsewhere. Hidden files and folders are ignored.
    """
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(_visible_files(directory)):
        relative = path.relative_to(directory).as_posix()
        size = path.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with path.open("rb") as handle:
            if path.suffix not in _WEIGHT_SUFFIXES or size <= 3 * _SAMPLE_BYTES:
                digest.update(handle.read())
                continue
            for offset in (0, size // 2, size - _SAMPLE_BYTES):
                handle.seek(offset)
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def source_identity(prefix: str, spec: str, directory: Path | None, repo_ids: Sequence[str]) -> str:
    """What identifies the weights, so equal identities mean equal vectors.

    A local directory gives ``<prefix><dir name>@<fingerprint>`` (not the full path, so a
    model copied or mounted elsewhere keeps its identity); a cached hub model gives
    ``<prefix><spec>@<repo>:<commit>``.
    """
    if directory is None:
        snapshot = hub_snapshot(repo_ids)
        if snapshot is not None and snapshot.parent.name == "snapshots":
            repo = snapshot.parent.parent.name.removeprefix("models--").replace("--", "/")
            return f"{prefix}{spec}@{repo}:{snapshot.name}"
        if snapshot is None:
            return f"{prefix}{spec}@unknown-weights"
        directory = snapshot
    return f"{prefix}{directory.name}@{directory_fingerprint(directory)}"


def _visible_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / n for n in names if not n.startswith("."))
    return files


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].strip()
