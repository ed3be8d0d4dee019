"""Embedder on a sentence-transformers model that embeds images (CLIP and kin), texts too."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from lookalike_core.pixels import PixelPreprocessor, PixelSpec
from PIL import Image

from similarity.engine.embedders.base import (
    Batch,
    Embedder,
    EmbedderLoadError,
    l2_normalise,
    load_pretrained,
    source_identity,
)
from similarity.engine.embedders.fastprep import checked_preprocessor
from similarity.engine.embedders.hf import describe_image_processor, processor_image_size
from similarity.engine.embedders.registry import ModelFamily, Thresholds
from similarity.engine.embedders.specs import DEFAULT_MODEL

ST_ORGANISATION = "sentence-transformers"


class SentenceTransformerEmbedder(Embedder):
    """A SentenceTransformer by hub name or local directory, e.g. ``clip-ViT-B-32``.

    Preprocessing and the forward pass are those of ``SentenceTransformer.encode`` taken
    apart: ``model.preprocess`` runs the input module's processor (CLIPProcessor's image
    processor for images, its tokenizer for texts) and ``model(features)`` runs the
    modules (``get_image_features`` / ``get_text_features`` for CLIP) under inference mode.
    """

    def __init__(self, spec: str = DEFAULT_MODEL, *, device: str = "cpu") -> None:
        self.name = spec
        self.device = device
        self._model, self._directory = load_pretrained(
            spec, _loader(device), repo_ids=_repo_ids(spec)
        )
        self._model.eval()
        modalities = list(self._model.modalities)
        if not self._model.supports("image"):
            raise EmbedderLoadError(
                f"Embedding model {spec!r} cannot embed images (it handles {modalities}); "
                f"use an image model such as {DEFAULT_MODEL!r}"
            )
        self.supports_text = bool(self._model.supports("text"))
        self.image_size = processor_image_size(getattr(self._model[0], "processor", None))
        self._fast = self._checked_fast_preprocessor()
        blank = Image.new("RGB", (self.image_size or 32,) * 2, "white")
        self.dimension = int(self.embed_images([blank]).shape[1])

    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        if self._fast is not None and images:
            import torch

            return {"pixel_values": torch.from_numpy(self._fast(images)), "modality": "image"}
        return self._model.preprocess(list(images))

    def _checked_fast_preprocessor(self) -> PixelPreprocessor | None:
        """The core preprocessor for the model's processor, if it gives the processor's pixels."""
        return checked_preprocessor(getattr(self._model[0], "processor", None), self._reference)

    def _reference(self, probes: list[Image.Image]) -> np.ndarray | None:
        reference = self._model.preprocess(probes)
        if set(reference) != {"pixel_values", "modality"} or reference["modality"] != "image":
            return None
        return np.asarray(reference["pixel_values"].float().numpy())

    def pixel_spec(self) -> PixelSpec | None:
        return self._fast.spec if self._fast is not None else None

    def _forward(self, batch: Batch) -> np.ndarray:
        import torch
        from sentence_transformers.util import batch_to_device

        with torch.inference_mode():
            features = batch_to_device(dict(batch), self._model.device)
            embeddings: torch.Tensor = self._model(features)["sentence_embedding"]
            return embeddings.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not self.supports_text:
            return super().embed_texts(texts)
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a sequence of strings, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalise(self._forward(self._model.preprocess(list(texts))))

    def image_module(self) -> Any | None:
        probe = self.preprocess([Image.new("RGB", (self.image_size or 32,) * 2, "white")])
        if set(probe) - {"pixel_values", "modality"}:
            return None  # more inputs than pixels (masks, sizes): not a single-tensor graph
        return _image_module(self._model)

    def pixel_values(self, batch: Batch) -> Any:
        return batch["pixel_values"]

    def preprocessing(self) -> dict[str, Any]:
        return describe_image_processor(
            getattr(self._model[0], "processor", None),
            spec=self.pixel_spec(),
            how=f"sentence-transformers {self.name!r}: "
            "SentenceTransformer(model).encode(images, normalize_embeddings=True) "
            "gives the same vectors",
        )

    def identity(self) -> str:
        return self._identity

    @cached_property
    def _identity(self) -> str:
        return source_identity("", self.name, self._directory, _repo_ids(self.name))


def _load(reference: str, device: str) -> Embedder:
    return SentenceTransformerEmbedder(reference, device=device)


FAMILY = ModelFamily(
    name="clip",
    catch_all=True,  # any spec no other family claims: a hub name or a local directory
    catch_all_form="a sentence-transformers name or path",
    load=_load,
    preprocessing="the model's image processor (CLIP: shorter side, centre crop, normalise)",
    # Not measurable offline (no weights here): a conservative, documented guess; set them
    # per shop.
    thresholds=Thresholds(duplicate=0.05, similar=0.25),
)


def _image_module(model: Any) -> Any:
    import torch

    class SentenceImageModule(torch.nn.Module):
        """The whole sentence-transformers stack (all modules) on the image modality."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            features = {"pixel_values": pixel_values, "modality": "image"}
            embeddings: torch.Tensor = self.model(features)["sentence_embedding"]
            return embeddings.float()

    return SentenceImageModule().eval()


def _repo_ids(spec: str) -> list[str]:
    # SentenceTransformer looks bare names up under the sentence-transformers organisation.
    return [spec] if "/" in spec else [f"{ST_ORGANISATION}/{spec}", spec]


def _loader(device: str) -> Any:
    def load(name: str, local_files_only: bool) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(name, device=device, local_files_only=local_files_only)

    return load
