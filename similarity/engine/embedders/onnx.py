"""ONNX Runtime image embedders: the image path exported once per model, cached, int8 too."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from similarity.engine.embedders.base import Batch, Embedder
from similarity.engine.embedders.wrapped import RuntimeEmbedder, RuntimeUnavailable
from similarity.engine.files import atomic_path, atomic_write_bytes

logger = logging.getLogger(__name__)

OPSET = 17
# torch 2.13's default (dynamo) exporter needs the onnxscript package; the TorchScript
# exporter is built in, exports these models exactly (max abs diff ~1e-6) and in seconds.
EXPORTER = "torchscript"
CACHE_FORMAT = 1
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INFO_FILE = "export.json"
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "embedding"

# How many exports / quantisations this process ran (tests check that a cache hit runs none).
work_counter: Counter[str] = Counter()
_export_lock = threading.Lock()


def runtime_versions() -> dict[str, str | int]:
    """Everything besides the weights that shapes the exported graph."""
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": OPSET,
        "exporter": EXPORTER,
        "format": CACHE_FORMAT,
    }


def cache_key(identity: str) -> str:
    """``<readable model name>-<hash of identity + versions>``: one directory per model build."""
    payload = json.dumps({"identity": identity, **runtime_versions()}, sort_keys=True)
    digest = hashlib.blake2b(payload.encode(), digest_size=10).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split("@")[0].split("/")[-1])[:48]
    return f"{readable or 'model'}-{digest}"


def onnx_model_path(embedder: Embedder, cache_dir: Path, *, int8: bool = False) -> Path:
    """The cached ONNX file for ``embedder`` (exported / quantised now if missing)."""
    entry = Path(cache_dir) / cache_key(embedder.identity())
    fp32 = entry / FP32_FILE
    with _export_lock:
        if not fp32.exists():
            _export(embedder, entry)
        if not int8:
            return fp32
        quantised = entry / INT8_FILE
        if not quantised.exists():
            _quantise(fp32, quantised)
        return quantised


def _export(embedder: Embedder, entry: Path) -> None:
    import torch

    module = embedder.image_module()
    if module is None:
        raise RuntimeUnavailable(f"{embedder.name!r} has no torch image module to export to ONNX")
    side = embedder.image_size or 32
    blanks = [Image.new("RGB", (side, side), colour) for colour in ("white", "grey")]
    # Two images, so the tracer cannot specialise the batch dimension to 1.
    example = embedder.pixel_values(embedder.preprocess(blanks))
    entry.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        with (
            atomic_path(entry / FP32_FILE) as temporary,
            warnings.catch_warnings(),
            torch.inference_mode(False),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                module,
                (example,),
                str(temporary),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
            info = {"identity": embedder.identity(), "model": embedder.name, **runtime_versions()}
            atomic_write_bytes(entry / INFO_FILE, json.dumps(info, indent=2).encode())
    except RuntimeUnavailable:
        raise
    except Exception as error:
        raise RuntimeUnavailable(
            f"exporting {embedder.name!r} to ONNX failed: {type(error).__name__}: {error}"
        ) from error
    work_counter["export"] += 1
    logger.info("Exported %s to %s in %.1f s", embedder.name, entry, time.perf_counter() - started)


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    try:
        with atomic_path(target) as temporary:
            quantize_dynamic(str(source), str(temporary), weight_type=QuantType.QInt8)
    except Exception as error:
        raise RuntimeUnavailable(
            f"int8 quantisation of {source} failed: {type(error).__name__}: {error}"
        ) from error
    work_counter["quantise"] += 1
    logger.info("Quantised %s to int8 in %.1f s", source.parent.name, time.perf_counter() - started)


def session_options(threads: int | None) -> Any:
    """One intra-op pool of ``threads`` (default: all cores), no inter-op pool, no spinning.

    Spinning workers would burn the cores the decode threads need between batches.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxEmbedder(RuntimeEmbedder):
    """``base``'s image path on ONNX Runtime (CPU), fp32 or dynamically quantised int8."""

    def __init__(
        self, base: Embedder, *, cache_dir: Path, threads: int | None = None, int8: bool = False
    ) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise RuntimeUnavailable(
                "onnxruntime is not installed (pip install -r requirements.txt)"
            ) from error
        super().__init__(base)
        self.runtime = "onnx-int8" if int8 else "onnx"
        self.model_path = onnx_model_path(base, Path(cache_dir), int8=int8)
        try:
            self._session = onnxruntime.InferenceSession(
                str(self.model_path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            # A damaged cache entry (crash, full disk): drop it so the next run exports again.
            self.model_path.unlink(missing_ok=True)
            raise RuntimeUnavailable(
                f"cannot load the cached ONNX model {self.model_path} ({type(error).__name__}: "
                f"{error}); it was removed and will be exported again"
            ) from error

    def _forward(self, batch: Batch) -> np.ndarray:
        pixels = self.base.pixel_values(batch)
        array = np.ascontiguousarray(
            pixels.numpy() if hasattr(pixels, "numpy") else pixels, dtype=np.float32
        )
        return np.asarray(self._session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
