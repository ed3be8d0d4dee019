"""The base of every embedding runtime: another way to run a model's image forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lookalike_core.pixels import PixelSpec
from PIL import Image

from similarity.engine.embedders.base import Batch, Embedder, EmbedderLoadError

REFERENCE = "torch"


class RuntimeUnavailable(EmbedderLoadError):
    """This runtime cannot run this model here (missing package, not exportable...)."""


class RuntimeEmbedder(Embedder):
    """Another way to run ``base``'s image forward pass: same preprocessing, same identity.

    The identity stays the model's: a runtime is only ever used after passing the
    accuracy gate, so its vectors may sit next to the reference's in one index.
    Text queries always run on the base (torch fp32) model.
    """

    runtime: str = REFERENCE

    def __init__(self, base: Embedder) -> None:
        self.base = base
        self.name = base.name
        self.dimension = base.dimension
        self.supports_text = base.supports_text
        self.image_size = base.image_size

    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        return self.base.preprocess(images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.base.embed_texts(texts)

    def identity(self) -> str:
        return self.base.identity()

    def preprocessing(self) -> dict[str, Any]:
        return self.base.preprocessing()

    def pixel_spec(self) -> PixelSpec | None:
        return self.base.pixel_spec()

    def pixel_values(self, batch: Batch) -> Any:
        return self.base.pixel_values(batch)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} runtime={self.runtime} d={self.dimension}>"
