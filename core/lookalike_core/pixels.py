"""Model preprocessing as data: a spec (resize, crop, rescale, normalise) and its one executor.

The server publishes a model's ``PixelSpec`` (``GET /api/index/client/``) and runs it
through ``PixelPreprocessor``; the client reads the same spec and runs the same code, so a
photo becomes the same pixel tensor on both sides. The executor is Pillow resizing plus a
per-channel lookup table: ``(value * rescale - mean) / std`` computed once for the 256
levels in float32, which is what transformers' image processors compute per pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

SPEC_VERSION = 1
RESIZE_MODES = ("shortest_edge", "exact")
LONG_SIDE_ROUNDING = ("floor", "round")  # transformers truncates; EfficientNet-Lite rounds
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Pillow's resampling numbers (as transformers stores them) to the names above.
RESAMPLE_BY_NUMBER = {int(number): name for name, number in RESAMPLE.items()}

MSG_BAD_SPEC = "preprocessing spec: {field} {problem}; got {value!r}"


class PixelSpecError(ValueError):
    """A preprocessing spec that cannot be executed (unknown mode, bad size...)."""


@dataclass(frozen=True)
class PixelSpec:
    """How an RGB image becomes a (3, crop_h, crop_w) float32 tensor for a model.

    ``resize``: ``shortest_edge`` scales the shorter side to ``size[0]`` keeping the aspect
    ratio (the long side floored or rounded per ``long_side``); ``exact`` resizes to
    ``size`` = (width, height). ``crop``: a centre crop (width, height), or None. Then each
    channel is ``(pixel * rescale - mean) / std``, laid out NCHW.
    """

    resize: str
    size: tuple[int, int]
    resample: str
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: tuple[int, int] | None = None
    long_side: str = "floor"

    def __post_init__(self) -> None:
        _check(self.resize in RESIZE_MODES, "resize", f"must be one of {RESIZE_MODES}",
               self.resize)
        _check(len(self.size) == 2 and all(side > 0 for side in self.size), "size",
               "must be two positive integers", self.size)
        _check(self.resample in RESAMPLE, "resample", f"must be one of {tuple(RESAMPLE)}",
               self.resample)
        _check(self.long_side in LONG_SIDE_ROUNDING, "long_side",
               f"must be one of {LONG_SIDE_ROUNDING}", self.long_side)
        _check(len(self.mean) == 3 and len(self.std) == 3 and all(s != 0 for s in self.std),
               "mean/std", "must be three values each, std non-zero", (self.mean, self.std))
        if self.crop is not None:
            _check(len(self.crop) == 2 and all(side > 0 for side in self.crop), "crop",
                   "must be two positive integers or null", self.crop)
        # Images of one batch must come out the same size: a kept aspect ratio needs a crop.
        _check(self.resize == "exact" or self.crop is not None, "crop",
               "is required with resize shortest_edge", self.crop)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.crop if self.crop is not None else self.size

    @property
    def image_size(self) -> int:
        """The smallest side worth decoding (JPEG draft mode): the largest target side."""
        return max(*self.size, *(self.crop or (0, 0)))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of an image of ``width`` x ``height`` after the resize step."""
        if self.resize == "exact":
            return self.size
        side = self.size[0]
        short, long = (width, height) if width <= height else (height, width)
        scaled = side * long / short
        other = max(side, int(scaled) if self.long_side == "floor" else round(scaled))
        return (side, other) if width <= height else (other, side)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form the server publishes and ``from_dict`` reads."""
        return {
            "version": SPEC_VERSION,
            "resize": self.resize,
            "size": list(self.size),
            "long_side": self.long_side,
            "resample": self.resample,
            "crop": list(self.crop) if self.crop is not None else None,
            "rescale": self.rescale,
            "mean": list(self.mean),
            "std": list(self.std),
            "colour_order": "RGB",
            "layout": "NCHW",
            "dtype": "float32",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PixelSpec:
        """The spec in ``data`` (``as_dict``'s form); PixelSpecError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise PixelSpecError(MSG_BAD_SPEC.format(field="spec", problem="must be an object",
                                                     value=data))
        version = data.get("version")
        _check(version == SPEC_VERSION, "version", f"must be {SPEC_VERSION} (upgrade the "
               "client)", version)
        try:
            crop = data.get("crop")
            return cls(
                resize=str(data["resize"]),
                size=_pair(data["size"]),
                long_side=str(data.get("long_side", "floor")),
                resample=str(data["resample"]),
                crop=None if crop is None else _pair(crop),
                rescale=float(data["rescale"]),
                mean=_triple(data["mean"]),
                std=_triple(data["std"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, PixelSpecError):
                raise
            raise PixelSpecError(MSG_BAD_SPEC.format(field="spec", problem=f"is incomplete "
                                                     f"({type(error).__name__}: {error})",
                                                     value=dict(data))) from error


class PixelPreprocessor:
    """Runs a ``PixelSpec``: thread-safe, no state besides the lookup tables."""

    def __init__(self, spec: PixelSpec) -> None:
        self.spec = spec
        levels = np.arange(256, dtype=np.float32)
        self.tables = np.stack(
            [
                (levels * np.float32(spec.rescale) - np.float32(m)) / np.float32(s)
                for m, s in zip(spec.mean, spec.std, strict=True)
            ]
        ).astype(np.float32)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 3, height, width) float32 model inputs for RGB images."""
        width, height = self.spec.output_size
        out = np.empty((len(images), 3, height, width), dtype=np.float32)
        for row, image in enumerate(images):
            pixels = np.asarray(self.resize_and_crop(image.convert("RGB")))
            for channel in range(3):
                out[row, channel] = self.tables[channel][pixels[:, :, channel]]
        return out

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """The resized, centre-cropped RGB image (before rescale and normalise)."""
        size = self.spec.resized_size(*image.size)
        resized = image.resize(size, RESAMPLE[self.spec.resample])
        if self.spec.crop is None:
            return resized
        crop_w, crop_h = self.spec.crop
        left = (size[0] - crop_w) // 2
        top = (size[1] - crop_h) // 2
        return resized.crop((left, top, left + crop_w, top + crop_h))


def _check(ok: bool, field: str, problem: str, value: object) -> None:
    if not ok:
        raise PixelSpecError(MSG_BAD_SPEC.format(field=field, problem=problem, value=value))


def _pair(value: Any) -> tuple[int, int]:
    first, second = value
    return int(first), int(second)


def _triple(value: Any) -> tuple[float, float, float]:
    first, second, third = value
    return float(first), float(second), float(third)
