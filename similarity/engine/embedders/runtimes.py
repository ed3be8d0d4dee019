"""Embedding runtimes (torch fp32/bf16, ONNX Runtime fp32/int8), their accuracy gate and `auto`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from similarity.engine.embedders.base import Batch, Embedder, EmbedderLoadError
from similarity.engine.embedders.onnx import OnnxEmbedder
from similarity.engine.embedders.wrapped import REFERENCE as REFERENCE  # the services read it here
from similarity.engine.embedders.wrapped import RuntimeEmbedder, RuntimeUnavailable

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "torch-bf16", "onnx", "onnx-int8")
AUTO = "auto"
RUNTIME_CHOICES = (*RUNTIMES, AUTO)
DEFAULT_MIN_COSINE = 0.995
DEFAULT_MIN_OVERLAP = 0.9
NEIGHBORS = 10

MSG_UNKNOWN_RUNTIME = "unknown embedding runtime {runtime!r}; choose one of {choices}"
MSG_REFUSED = (
    "runtime {runtime!r} disagrees with the torch fp32 reference on {model!r}: mean cosine "
    "{mean_cosine:.6f} (minimum {min_cosine}), top-{k} neighbor overlap {overlap:.3f} "
    "(minimum {min_overlap}) over {n} calibration images; use --runtime torch (or auto)"
)
MSG_NO_CALIBRATION = "the accuracy gate needs at least {k} calibration images; got {n}"


class RuntimeRefused(EmbedderLoadError):
    """The runtime failed the accuracy gate: its vectors must not mix with the reference's."""


def validate_runtime(runtime: str) -> str:
    """``runtime`` trimmed and lower-cased; ValueError naming the choices if it is unknown."""
    cleaned = str(runtime).strip().lower()
    if cleaned not in RUNTIME_CHOICES:
        raise ValueError(
            MSG_UNKNOWN_RUNTIME.format(runtime=runtime, choices=", ".join(RUNTIME_CHOICES))
        )
    return cleaned


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether bf16 matmuls run natively (AVX512-BF16 or AMX-BF16) and oneDNN can use them."""
    if not {"avx512_bf16", "amx_bf16"} & cpu_flags():
        return False
    import torch

    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    # torch leaves mkldnn.is_available unannotated.
    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(available and (supported is None or supported()))


class TorchBf16Embedder(RuntimeEmbedder):
    """The torch model under bfloat16 autocast (fast only on CPUs with native bf16)."""

    runtime = "torch-bf16"

    def __init__(self, base: Embedder) -> None:
        if base.image_module() is None:
            raise RuntimeUnavailable(f"{base.name!r} is not a torch model; bf16 does not apply")
        super().__init__(base)

    def _forward(self, batch: Batch) -> np.ndarray:
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.base._forward(batch)


def make_runtime(
    embedder: Embedder, runtime: str, *, cache_dir: Path | None = None, threads: int | None = None
) -> Embedder:
    """``embedder`` run by ``runtime`` (no gate); RuntimeUnavailable if that cannot be done."""
    runtime = validate_runtime(runtime)
    if runtime == AUTO:
        raise ValueError("make_runtime needs a concrete runtime; use select_runtime for auto")
    if runtime == REFERENCE:
        return embedder
    if runtime == "torch-bf16":
        return TorchBf16Embedder(embedder)
    if cache_dir is None:
        raise RuntimeUnavailable(f"runtime {runtime!r} needs a cache directory for the ONNX model")
    return OnnxEmbedder(embedder, cache_dir=cache_dir, threads=threads, int8=runtime == "onnx-int8")


@dataclass(frozen=True)
class Agreement:
    """How closely a runtime's vectors match the reference's on the calibration images."""

    images: int
    mean_cosine: float
    min_cosine: float
    max_abs_diff: float
    top10_overlap: float

    def passes(self, min_cosine: float, min_overlap: float) -> bool:
        return self.mean_cosine >= min_cosine and self.top10_overlap >= min_overlap


def measure_agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Row-wise cosine and top-10 neighbor overlap (self excluded) of two unit-row matrices."""
    if reference.shape != candidate.shape or reference.shape[0] <= NEIGHBORS:
        raise ValueError(
            f"need two equal (n > {NEIGHBORS}, d) matrices; got {reference.shape} "
            f"and {candidate.shape}"
        )
    cosines = np.sum(reference * candidate, axis=1)
    overlap = float(
        np.mean(
            [
                len(set(a) & set(b)) / NEIGHBORS
                for a, b in zip(_neighbors(reference), _neighbors(candidate), strict=True)
            ]
        )
    )
    return Agreement(
        images=int(reference.shape[0]),
        mean_cosine=float(cosines.mean()),
        min_cosine=float(cosines.min()),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        top10_overlap=overlap,
    )


def _neighbors(vectors: np.ndarray) -> np.ndarray:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :NEIGHBORS]


@dataclass
class RuntimeChoice:
    """The runtime a build uses, what it measured, and why others were passed over."""

    requested: str
    runtime: str
    agreement: Agreement | None = None  # None for the reference itself
    images_per_second: float | None = None  # forward pass, on the calibration batch
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"runtime", "reason"}]
    speeds: dict[str, float] = field(default_factory=dict)  # every runtime that passed

    def as_manifest(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "runtime_requested": self.requested,
            "runtime_agreement": asdict(self.agreement) if self.agreement else None,
            "runtime_images_per_second": self.images_per_second,
            "runtime_skipped": list(self.skipped),
            "runtime_speeds": dict(self.speeds),
        }


def auto_candidates(embedder: Embedder) -> list[str]:
    """Runtimes `auto` weighs; bf16 only where the CPU runs it natively (else it is slow)."""
    if embedder.image_module() is None:
        return [REFERENCE]
    order = ["onnx-int8"]
    if cpu_has_native_bf16():
        order.append("torch-bf16")
    return [*order, "onnx", REFERENCE]


_auto_cache: dict[tuple[str, str], RuntimeChoice] = {}
_runtime_cache: dict[tuple[str, str, str, int | None], Embedder] = {}
_cache_lock = threading.RLock()


def clear_runtime_cache() -> None:
    """Forget runtimes and `auto` decisions made in this process."""
    with _cache_lock:
        _auto_cache.clear()
        _runtime_cache.clear()


@dataclass(frozen=True)
class _Gate:
    """The accuracy gate of one selection: calibration images and its thresholds."""

    calibration: Sequence[Image.Image]
    cache_dir: Path | None
    threads: int | None
    min_cosine: float
    min_overlap: float


@dataclass
class _Passed:
    speed: float  # forward images/s
    name: str
    embedder: Embedder
    agreement: Agreement | None


def select_runtime(
    embedder: Embedder,
    runtime: str,
    *,
    calibration: Sequence[Image.Image],
    cache_dir: Path | None = None,
    threads: int | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> tuple[Embedder, RuntimeChoice]:
    """``embedder`` on ``runtime`` once it has passed the accuracy gate, and the evidence.

    A non-reference runtime embeds ``calibration`` alongside torch fp32; a mean cosine
    below ``min_cosine`` or a top-10 neighbor overlap below ``min_overlap`` refuses it
    (RuntimeRefused). ``auto`` gates every runtime of ``auto_candidates``, skips those
    unavailable or refused, times the forward pass of the others (torch included) on the
    calibration batch and keeps the fastest; its decision is cached per model identity.
    """
    runtime = validate_runtime(runtime)
    if runtime == REFERENCE:
        return embedder, RuntimeChoice(requested=runtime, runtime=REFERENCE)
    gate = _Gate(calibration, cache_dir, threads, min_cosine, min_overlap)
    with _cache_lock:
        auto_key = (embedder.identity(), repr((min_cosine, min_overlap)))
        if runtime == AUTO and auto_key in _auto_cache:
            choice = _auto_cache[auto_key]
            return _cached_runtime(embedder, choice.runtime, cache_dir, threads), choice
        chosen, choice = _fastest_passing(embedder, runtime, gate)
        if runtime == AUTO:
            _auto_cache[auto_key] = choice
        return chosen, choice


def _fastest_passing(
    embedder: Embedder, runtime: str, gate: _Gate
) -> tuple[Embedder, RuntimeChoice]:
    """The fastest of ``runtime``'s candidates that pass the gate (``auto``: of several)."""
    candidates = auto_candidates(embedder) if runtime == AUTO else [runtime]
    if candidates == [REFERENCE]:  # nothing but torch can run this model
        return embedder, RuntimeChoice(requested=runtime, runtime=REFERENCE)
    passed, skipped = _gate_candidates(embedder, runtime, candidates, gate)
    best = max(passed, key=lambda candidate: candidate.speed)
    choice = RuntimeChoice(
        requested=runtime,
        runtime=best.name,
        agreement=best.agreement,
        images_per_second=round(best.speed, 1),
        skipped=skipped,
        speeds={candidate.name: round(candidate.speed, 1) for candidate in passed},
    )
    logger.info("Embedding runtime %s (requested %s); forward images/s: %s",
                best.name, runtime, choice.speeds)
    return best.embedder, choice


def _gate_candidates(
    embedder: Embedder, runtime: str, candidates: list[str], gate: _Gate
) -> tuple[list[_Passed], list[dict[str, str]]]:
    """The candidates that passed, timed, and {"runtime", "reason"} of those skipped.

    Only ``auto`` skips: an explicit runtime that is unavailable or refused raises.
    """
    if len(gate.calibration) <= NEIGHBORS:
        raise ValueError(MSG_NO_CALIBRATION.format(k=NEIGHBORS + 1, n=len(gate.calibration)))
    reference = embedder.embed_images(gate.calibration)
    batch = embedder.preprocess(gate.calibration)
    passed: list[_Passed] = []
    skipped: list[dict[str, str]] = []
    for name in candidates:
        try:
            candidate, agreement = (
                (embedder, None) if name == REFERENCE else _gate(embedder, name, reference, gate)
            )
        except (RuntimeUnavailable, RuntimeRefused) as error:
            if runtime != AUTO:
                raise
            logger.warning("auto runtime: skipping %s: %s", name, error)
            skipped.append({"runtime": name, "reason": str(error)})
            continue
        speed = _speed(candidate, batch, len(gate.calibration))
        passed.append(_Passed(speed, name, candidate, agreement))
    return passed, skipped


def _gate(
    embedder: Embedder, name: str, reference: np.ndarray, gate: _Gate
) -> tuple[Embedder, Agreement]:
    candidate = _cached_runtime(embedder, name, gate.cache_dir, gate.threads)
    agreement = measure_agreement(reference, candidate.embed_images(gate.calibration))
    if not agreement.passes(gate.min_cosine, gate.min_overlap):
        raise RuntimeRefused(
            MSG_REFUSED.format(
                runtime=name,
                model=embedder.name,
                mean_cosine=agreement.mean_cosine,
                min_cosine=gate.min_cosine,
                k=NEIGHBORS,
                overlap=agreement.top10_overlap,
                min_overlap=gate.min_overlap,
                n=agreement.images,
            )
        )
    return candidate, agreement


def _speed(embedder: Embedder, batch: Batch, images: int) -> float:
    """Forward-pass images/s on a preprocessed batch (the gate already warmed it up)."""
    started = time.perf_counter()
    embedder.embed_preprocessed(batch)
    return images / max(time.perf_counter() - started, 1e-9)


def _cached_runtime(
    embedder: Embedder, runtime: str, cache_dir: Path | None, threads: int | None
) -> Embedder:
    if runtime == REFERENCE:
        return embedder
    key = (embedder.identity(), runtime, str(cache_dir), threads)
    with _cache_lock:
        cached = _runtime_cache.get(key)
        if cached is None or getattr(cached, "base", None) is not embedder:
            _runtime_cache[key] = make_runtime(
                embedder, runtime, cache_dir=cache_dir, threads=threads
            )
        return _runtime_cache[key]
