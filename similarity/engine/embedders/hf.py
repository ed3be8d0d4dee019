"""Embedder on a Hugging Face transformers vision backbone (ViT, DINOv2, ResNet, CLIP...)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from lookalike_core.pixels import PixelSpec
from PIL import Image

from similarity.engine.embedders.base import (
    Batch,
    Embedder,
    load_pretrained,
    preprocessing_description,
    source_identity,
)
from similarity.engine.embedders.fastprep import checked_preprocessor
from similarity.engine.embedders.registry import ModelFamily, Thresholds

TRANSFORMERS_PREFIX = "transformers:"


class TransformersEmbedder(Embedder):
    """AutoModel + AutoImageProcessor; the vector is the model's pooled output.

    Pooling: ``get_image_features`` for dual encoders (CLIP, SigLIP); else ``pooler_output``
    when the checkpoint has trained pooler weights; else the mean of the last hidden state
    over tokens (transformers) or over the spatial grid (conv nets). Conv pooled outputs of
    shape (n, c, 1, 1), like ResNet's, are flattened.
    """

    supports_text = False

    def __init__(self, model_ref: str, *, device: str = "cpu") -> None:
        self.name = f"{TRANSFORMERS_PREFIX}{model_ref}"
        self.device = device
        (model, processor, info), self._directory = load_pretrained(
            model_ref, _load_auto, label=self.name
        )
        self._model_ref = model_ref
        self._model = model.to(device).eval()
        self._processor = processor
        missing = info.get("missing_keys", []) if isinstance(info, dict) else []
        # A pooler initialised at load time (e.g. DINO ViT checkpoints) is random: skip it.
        self._use_pooler = not any("pooler" in key for key in missing)
        self._image_features = hasattr(self._model, "get_image_features")
        self.image_size = processor_image_size(processor)
        self._fast = checked_preprocessor(processor, self._reference)
        blank = Image.new("RGB", (self.image_size or 32,) * 2, "white")
        self.dimension = int(self.embed_images([blank]).shape[1])

    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        if self._fast is not None and images:
            import torch

            return torch.from_numpy(self._fast(images))
        return self._processor(images=list(images), return_tensors="pt")["pixel_values"]

    def _reference(self, probes: list[Image.Image]) -> np.ndarray | None:
        output = self._processor(images=probes, return_tensors="pt")
        if set(output) != {"pixel_values"}:
            return None
        return np.asarray(output["pixel_values"].float().numpy())

    def pixel_spec(self) -> PixelSpec | None:
        return self._fast.spec if self._fast is not None else None

    def _forward(self, batch: Batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pixel_values = batch.to(self.device)
            pooled: torch.Tensor = _pooled(
                self._model, pixel_values, self._image_features, self._use_pooler
            )
            return pooled.float().cpu().numpy()

    def image_module(self) -> Any | None:
        import torch

        model, image_features, use_pooler = self._model, self._image_features, self._use_pooler

        class PooledImageModule(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                pooled: torch.Tensor = _pooled(self.model, pixel_values, image_features, use_pooler)
                return pooled.float()

        return PooledImageModule().eval()

    def pixel_values(self, batch: Batch) -> Any:
        return batch

    def preprocessing(self) -> dict[str, Any]:
        return describe_image_processor(
            self._processor,
            spec=self.pixel_spec(),
            how=f"transformers AutoModel + AutoImageProcessor of {self._model_ref!r}, "
            "pooled output (get_image_features, else pooler_output, else mean of the last "
            "hidden state), L2-normalised",
        )

    def identity(self) -> str:
        return self._identity

    @cached_property
    def _identity(self) -> str:
        return source_identity(
            TRANSFORMERS_PREFIX, self._model_ref, self._directory, [self._model_ref]
        )


def _load(reference: str, device: str) -> Embedder:
    return TransformersEmbedder(reference, device=device)


FAMILY = ModelFamily(
    name="transformers",
    prefix=TRANSFORMERS_PREFIX,
    load=_load,
    preprocessing="the checkpoint's AutoImageProcessor; pooled output",
    # Not measurable offline (no weights here): conservative until measured on the shop's
    # own labels and photos.
    thresholds=Thresholds(duplicate=0.05, similar=0.25),
)


def _pooled(model: Any, pixel_values: Any, image_features: bool, use_pooler: bool) -> Any:
    import torch

    if image_features:
        output = model.get_image_features(pixel_values=pixel_values)
        pooled = output if isinstance(output, torch.Tensor) else output.pooler_output
    else:
        pooled = pool_output(model(pixel_values=pixel_values), use_pooler)
    return pooled.reshape(pooled.shape[0], -1)


def pool_output(output: Any, use_pooler: bool = True) -> Any:
    """One vector per image from a backbone output: pooler, else mean over tokens or grid."""
    pooled = getattr(output, "pooler_output", None) if use_pooler else None
    if pooled is not None:
        return pooled
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    if hidden.ndim == 4:  # conv feature map (n, c, h, w)
        return hidden.mean(dim=(2, 3))
    if hidden.ndim == 3:  # tokens (n, seq, d)
        return hidden.mean(dim=1)
    return hidden


def processor_image_size(processor: Any) -> int | None:
    """The largest side an image processor resizes or crops to (for JPEG draft decoding)."""
    image_processor = getattr(processor, "image_processor", processor)
    sides: list[int] = []
    for attribute in ("size", "crop_size"):
        value = getattr(image_processor, attribute, None)
        if isinstance(value, int):
            sides.append(value)
        elif value is not None:
            mapping = value if isinstance(value, dict) else vars(value)
            sides.extend(
                int(side)
                for key in ("shortest_edge", "height", "width")
                if isinstance(side := mapping.get(key), int | float)
            )
    return max(sides) if sides else None


RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def describe_image_processor(
    processor: Any, *, how: str, spec: PixelSpec | None
) -> dict[str, Any]:
    """``Embedder.preprocessing()`` read from a transformers image processor's settings.

    Client-computable when ``spec`` (the core's reading of the processor, checked against
    it) is set: a client runs that spec and the model's ONNX export.
    """
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None)
    crop = getattr(image_processor, "crop_size", None)
    shortest = _size_value(size, "shortest_edge")
    height, width = _size_value(size, "height"), _size_value(size, "width")
    if not getattr(image_processor, "do_resize", True) or size is None:
        resize = "none"
    elif shortest:
        resize = f"shortest edge to {shortest} (aspect ratio kept)"
    elif height and width:
        resize = f"to {width}x{height} (width x height, aspect ratio not kept)"
    else:
        resize = f"as {type(image_processor).__name__} with size={size!r}"
    crop_h, crop_w = _size_value(crop, "height"), _size_value(crop, "width")
    do_crop = getattr(image_processor, "do_center_crop", False) and crop_h and crop_w
    resample = getattr(image_processor, "resample", None)
    do_rescale = getattr(image_processor, "do_rescale", False)
    do_normalize = getattr(image_processor, "do_normalize", False)
    return preprocessing_description(
        client_computable=spec is not None,
        spec=spec,
        image_size=processor_image_size(processor),
        resize=resize,
        crop=f"centre {crop_w}x{crop_h}" if do_crop else "none",
        resample=RESAMPLE_NAMES.get(int(resample), str(resample)) if resample is not None else "",
        rescale=float(getattr(image_processor, "rescale_factor", 1 / 255)) if do_rescale else None,
        mean=getattr(image_processor, "image_mean", None) if do_normalize else None,
        std=getattr(image_processor, "image_std", None) if do_normalize else None,
        colour_order="RGB",
        layout="NCHW float32: (pixel * rescale - mean) / std per channel",
        description=how,
    )


def _size_value(size: Any, key: str) -> int | None:
    if size is None or isinstance(size, int):
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if isinstance(value, int | float) else None


def _load_auto(name: str, local_files_only: bool) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import AutoImageProcessor, AutoModel

    model, info = AutoModel.from_pretrained(
        name, local_files_only=local_files_only, output_loading_info=True
    )
    # transformers leaves AutoImageProcessor.from_pretrained unannotated.
    processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
        name, local_files_only=local_files_only
    )
    return model, processor, info
