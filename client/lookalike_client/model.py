"""The server's model on this machine: its ONNX file fetched once (cached by checksum) and run
after the core's preprocessing, or the core's classic descriptor; unit vectors either way."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lookalike_core.classic import describe
from lookalike_core.pixels import PixelPreprocessor, PixelSpec
from lookalike_core.vectors import l2_normalise
from PIL import Image

from lookalike_client.server import ClientError, Server, ServerModel

MSG_DIMENSION = "the model gives {found}-d vectors but the server's index holds {expected}-d"
MSG_KIND = "this client does not know model kind {kind!r}; upgrade lookalike-client"


def default_cache_dir() -> Path:
    """Where models are kept: LOOKALIKE_CLIENT_CACHE, else ~/.cache/lookalike-client."""
    configured = os.environ.get("LOOKALIKE_CLIENT_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike-client"


class LocalModel:
    """Embeds RGB images as the server's index does (same identity, same vectors)."""

    def __init__(self, described: ServerModel, *, model_file: Path | None,
                 threads: int | None = None) -> None:
        self.described = described
        self.identity = described.model_identity
        self.image_size = described.image_size
        self._session: Any = None
        self._prep: PixelPreprocessor | None = None
        if described.kind == "onnx":
            if model_file is None or described.preprocessing is None or described.file is None:
                raise ClientError("the server described an ONNX model without its file or spec")
            self._prep = PixelPreprocessor(PixelSpec.from_dict(described.preprocessing))
            self._session = _session(model_file, threads)
            self._input = str(described.file["input"])
            self._output = str(described.file["output"])
        elif described.kind != "classic":
            raise ClientError(MSG_KIND.format(kind=described.kind))

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dimension) float32 unit rows for RGB images."""
        if not images:
            return np.zeros((0, self.described.dimension), dtype=np.float32)
        if self._prep is None:
            raw = np.stack([describe(image) for image in images]).astype(np.float32)
        else:
            pixels = self._prep(images)
            raw = np.asarray(self._session.run([self._output], {self._input: pixels})[0])
        vectors = l2_normalise(raw)
        if vectors.shape[1] != self.described.dimension:
            raise ClientError(MSG_DIMENSION.format(found=vectors.shape[1],
                                                   expected=self.described.dimension))
        return vectors


def local_model(server: Server, *, cache_dir: Path | None = None,
                threads: int | None = None) -> LocalModel:
    """The server's current model, its file fetched once into ``cache_dir`` (by sha256)."""
    described = server.model()
    model_file = None
    if described.file is not None:
        model_file = cached_model_file(server, described, cache_dir or default_cache_dir())
    return LocalModel(described, model_file=model_file, threads=threads)


def cached_model_file(server: Server, described: ServerModel, cache_dir: Path) -> Path:
    """The model file in the cache, downloaded when missing; checked against the identity."""
    assert described.file is not None
    sha256 = str(described.file["sha256"])
    target = cache_dir / f"{sha256}.onnx"
    info = cache_dir / f"{sha256}.json"
    if target.is_file() and _recorded_identity(info) == described.model_identity:
        return target
    server.download(str(described.file["url"]), target=target, sha256=sha256)
    info.write_text(json.dumps({"model": described.model,
                                "model_identity": described.model_identity}))
    return target


def _recorded_identity(info: Path) -> str | None:
    try:
        return str(json.loads(info.read_text())["model_identity"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
