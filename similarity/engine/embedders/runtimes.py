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

from similarity.engine.embedders import choice_cache
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
    reason: str = ""  # one sentence: why this runtime runs (logged, on the build record)
    measured_at: str = ""  # `auto`: when the choice was measured ("" = by this process)

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = self.explain()

    def explain(self) -> str:
        """Why ``runtime`` runs, in words a shop engineer can check."""
        if self.requested == REFERENCE:
            return "torch (the fp32 reference) was asked for"
        gate = (
            f"it passed the accuracy gate (mean cosine {self.agreement.mean_cosine:.6f}, "
            f"top-{NEIGHBORS} overlap {self.agreement.top10_overlap:.2f})"
            if self.agreement else ""
        )
        if self.requested != AUTO:
            return f"{self.runtime} was asked for and {gate}"
        if not self.speeds:
            return "auto: only the torch reference can run this model"
        speeds = ", ".join(
            f"{name} {speed:g}" for name, speed in sorted(self.speeds.items(), key=lambda s: -s[1])
        )
        why = f"auto: the fastest runtime here ({speeds} images/s)"
        why += f"; {gate}" if gate else ""
        if self.skipped:
            why += "; skipped " + ", ".join(item["runtime"] for item in self.skipped)
        return why

    def as_manifest(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "runtime_reason": self.reason,
            "runtime_measured_at": self.measured_at,
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
    choice_dir: Path | None = None,
) -> tuple[Embedder, RuntimeChoice]:
    """``embedder`` on ``runtime`` once it has passed the accuracy gate, and the evidence.

    A non-reference runtime embeds ``calibration`` alongside torch fp32; a mean cosine
    below ``min_cosine`` or a top-10 neighbor overlap below ``min_overlap`` refuses it
    (RuntimeRefused). ``auto`` gates every runtime of ``auto_candidates``, skips those
    unavailable or refused, times the forward pass of the others (torch included) on the
    calibration batch and keeps the fastest; its decision is cached per model identity in
    the process and, with ``choice_dir``, on disk per machine (``choice_cache``): a later
    process on the same CPU, weights and libraries reuses it without calibrating.
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
        if runtime != AUTO:
            return _fastest_passing(embedder, runtime, gate)
        remembered = _remembered(embedder, gate, choice_dir)
        if remembered is None:
            chosen, choice = _fastest_passing(embedder, runtime, gate)
            if choice_dir is not None and choice.runtime:
                path, current = _choice_file(embedder, gate, choice_dir)
                choice.measured_at = choice_cache.remember_choice(
                    path, current, _stored_fields(choice)
                )
        else:
            chosen, choice = remembered
        _auto_cache[auto_key] = choice
        return chosen, choice


_STORED = ("runtime", "agreement", "images_per_second", "skipped", "speeds")


def _stored_fields(choice: RuntimeChoice) -> dict[str, Any]:
    fields = asdict(choice)
    return {key: fields[key] for key in _STORED}


def _choice_file(embedder: Embedder, gate: _Gate, choice_dir: Path) -> tuple[Path, dict[str, Any]]:
    thresholds = {"min_cosine": gate.min_cosine, "min_overlap": gate.min_overlap,
                  "calibration_images": len(gate.calibration)}
    path = choice_cache.choice_path(choice_dir, embedder.identity(), thresholds)
    return path, choice_cache.fingerprint(threads=gate.threads)


def _remembered(
    embedder: Embedder, gate: _Gate, choice_dir: Path | None
) -> tuple[Embedder, RuntimeChoice] | None:
    """The choice a process on this machine measured for this model, if still valid."""
    if choice_dir is None:
        return None
    path, current = _choice_file(embedder, gate, choice_dir)
    stored = choice_cache.remembered_choice(path, current)
    if stored is None:
        return None
    try:
        agreement = Agreement(**stored["agreement"]) if stored.get("agreement") else None
        choice = RuntimeChoice(
            requested=AUTO,
            runtime=str(stored["runtime"]),
            agreement=agreement,
            images_per_second=stored.get("images_per_second"),
            skipped=list(stored.get("skipped") or []),
            speeds=dict(stored.get("speeds") or {}),
            measured_at=str(stored.get("measured_at", "")),
        )
        validate_runtime(choice.runtime)
        chosen = _cached_runtime(embedder, choice.runtime, gate.cache_dir, gate.threads)
    except (KeyError, TypeError, ValueError, RuntimeUnavailable) as error:
        logger.warning("Ignoring the remembered runtime choice %s: %s", path.name, error)
        return None
    choice.reason += f" (measured {choice.measured_at}, remembered in {path})"
    logger.info("Embedding runtime %s for %s: %s", choice.runtime, embedder.name, choice.reason)
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
    logger.info("Embedding runtime %s for %s: %s", best.name, embedder.name, choice.reason)
    return best.embedder, choice


def _gate_candidates(
    embedder: Embedder, runtime: str, candidates: list[str], gate: _Gate
) -> tuple[list[_Passed], list[dict[str, str]]]:
    """The candidates that passed, timed, and {"runtime", "reason"} of those skipped.

    Only ``auto`` skips: an explicit runtime that is unavailable or refused raises.
    """
    if len(gate.calibration) <= NEIGHBORS:
        raise ValueError(MSG_NO_CALIBRATION.format(k=NEIGHBORS + 1, n=len(gate.calibration)))
    batch = embedder.preprocess(gate.calibration)
    reference_speed, reference = _timed_forward(embedder, batch, len(gate.calibration))
    passed: list[_Passed] = []
    skipped: list[dict[str, str]] = []
    for name in candidates:
        if name == REFERENCE:
            passed.append(_Passed(reference_speed, name, embedder, None))
            continue
        try:
            passed.append(_gate(embedder, name, reference, batch, gate))
        except (RuntimeUnavailable, RuntimeRefused) as error:
            if runtime != AUTO:
                raise
            logger.warning("auto runtime: skipping %s: %s", name, error)
            skipped.append({"runtime": name, "reason": str(error)})
    return passed, skipped


def _gate(
    embedder: Embedder, name: str, reference: np.ndarray, batch: Batch, gate: _Gate
) -> _Passed:
    """``name`` compared with the reference on the calibration batch, timed on that pass."""
    candidate = _cached_runtime(embedder, name, gate.cache_dir, gate.threads)
    speed, vectors = _timed_forward(candidate, batch, len(gate.calibration))
    agreement = measure_agreement(reference, vectors)
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
    return _Passed(speed, name, candidate, agreement)


def _timed_forward(embedder: Embedder, batch: Batch, images: int) -> tuple[float, np.ndarray]:
    """Forward-pass images/s on a preprocessed batch, and the vectors (one pass serves both
    the gate and the timing: calibrating is part of a fresh machine's first build)."""
    started = time.perf_counter()
    vectors = embedder.embed_preprocessed(batch)
    return images / max(time.perf_counter() - started, 1e-9), vectors


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
