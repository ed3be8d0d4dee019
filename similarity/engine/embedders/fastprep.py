"""A numpy/Pillow twin of CLIP's image processor: same pixels, a fraction of the Python work.

transformers' processor validates, converts and normalises every image through generic
code (~3 ms per image here); with the same resize, crop and per-channel lookup-table
normalisation this takes well under 1 ms, and the decode threads keep up with the model.
It is used only for processors whose settings it reproduces exactly; anything else falls
back to the processor itself. A test checks the two agree on real processors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, as transformers stores it


class FastClipPreprocessor:
    """Resize (shortest edge), centre crop, rescale and normalise, as CLIPImageProcessor."""

    def __init__(self, shortest_edge: int, crop: int, mean: Sequence[float], std: Sequence[float],
                 rescale: float) -> None:
        self.shortest_edge = shortest_edge
        self.crop = crop
        levels = np.arange(256, dtype=np.float32)
        # One table per channel: value -> (value * rescale - mean) / std, in float32 as the
        # processor computes it.
        self.tables = np.stack(
            [
                (levels * np.float32(rescale) - np.float32(m)) / np.float32(s)
                for m, s in zip(mean, std, strict=True)
            ]
        ).astype(np.float32)

    @classmethod
    def for_processor(cls, processor: Any) -> FastClipPreprocessor | None:
        """The fast twin of ``processor``'s image processor, or None when it differs."""
        image_processor = getattr(processor, "image_processor", processor)
        if type(image_processor).__name__ not in {"CLIPImageProcessor", "CLIPImageProcessorPil"}:
            return None
        size = getattr(image_processor, "size", None)
        crop = getattr(image_processor, "crop_size", None)
        shortest = _get(size, "shortest_edge")
        crop_h, crop_w = _get(crop, "height"), _get(crop, "width")
        settings_match = (
            getattr(image_processor, "do_resize", False)
            and getattr(image_processor, "do_center_crop", False)
            and getattr(image_processor, "do_rescale", False)
            and getattr(image_processor, "do_normalize", False)
            and int(getattr(image_processor, "resample", -1)) == BICUBIC
            and shortest
            and crop_h
            and crop_h == crop_w
            and crop_h <= shortest
        )
        if not settings_match or shortest is None or crop_h is None:
            return None
        return cls(
            shortest,
            crop_h,
            image_processor.image_mean,
            image_processor.image_std,
            float(image_processor.rescale_factor),
        )

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, 3, crop, crop) float32 pixel values for RGB images."""
        out = np.empty((len(images), 3, self.crop, self.crop), dtype=np.float32)
        for row, image in enumerate(images):
            pixels = np.asarray(self._resize_and_crop(image.convert("RGB")))
            for channel in range(3):
                out[row, channel] = self.tables[channel][pixels[:, :, channel]]
        return out

    def _resize_and_crop(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = self.shortest_edge
        # transformers: the short side becomes `side`, the long one int(side * long / short).
        if width <= height:
            size = (side, int(side * height / width))
        else:
            size = (int(side * width / height), side)
        resized = image.resize(size, Image.Resampling.BICUBIC)
        left = (size[0] - self.crop) // 2
        top = (size[1] - self.crop) // 2
        return resized.crop((left, top, left + self.crop, top + self.crop))


def _get(size: Any, key: str) -> int | None:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)
