"""A transformers image processor read as a ``PixelSpec`` (lookalike_core.pixels), and checked.

transformers' processors validate, convert and normalise every image through generic code
(~3 ms per image here); the core's ``PixelPreprocessor`` does the same resize, crop and
per-channel lookup-table normalisation in well under 1 ms, and it is the code the light
client runs, so a published spec gives the client the server's pixels. It replaces a
processor only after reproducing its output on probe images; anything else keeps the
processor (and the model is then not client-computable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from lookalike_core.pixels import RESAMPLE_BY_NUMBER, PixelPreprocessor, PixelSpec
from PIL import Image

FAST_PREPROCESS_TOLERANCE = 1e-4  # largest pixel-value difference the core path may show

Reference = Callable[[list[Image.Image]], np.ndarray | None]


def pixel_spec_for_processor(processor: Any) -> PixelSpec | None:
    """The spec of ``processor``'s image processor, or None when it does more than a spec says.

    Readable: resize (shortest edge, or an exact height x width) with a Pillow filter, an
    optional centre crop, rescale and normalise, all switched on.
    """
    image_processor = getattr(processor, "image_processor", processor)
    if image_processor is None or not all(
        getattr(image_processor, flag, False) for flag in ("do_resize", "do_rescale",
                                                           "do_normalize")
    ):
        return None
    number = _int(getattr(image_processor, "resample", None))
    resample = None if number is None else RESAMPLE_BY_NUMBER.get(number)
    mean = _three(getattr(image_processor, "image_mean", None))
    std = _three(getattr(image_processor, "image_std", None))
    rescale = getattr(image_processor, "rescale_factor", None)
    resize = _resize(getattr(image_processor, "size", None))
    crop = _crop(image_processor)
    if resample is None or resize is None or isinstance(crop, bool) or rescale is None:
        return None
    if mean is None or std is None:
        return None
    mode, size = resize
    if mode == "shortest_edge" and (crop is None or max(crop) > size[0]):
        return None  # uneven batch shapes, or a crop the processor would pad
    try:
        return PixelSpec(resize=mode, size=size, resample=resample, rescale=float(rescale),
                         mean=mean, std=std, crop=crop, long_side="floor")
    except ValueError:
        return None


def checked_preprocessor(processor: Any, reference: Reference) -> PixelPreprocessor | None:
    """The core preprocessor for ``processor`` if it gives ``reference``'s pixels on probes.

    ``reference(images)`` returns the processor's own (n, 3, h, w) pixels, or None when its
    output is more than pixels (masks, sizes): then there is no single tensor to reproduce.
    """
    spec = pixel_spec_for_processor(processor)
    if spec is None:
        return None
    fast = PixelPreprocessor(spec)
    side = max(spec.size)
    # Landscape, portrait and odd sizes: the core path must reproduce the processor exactly.
    probes = [
        Image.effect_noise(size, 64).convert("RGB")
        for size in ((97, 61), (50, 131), (side + 3, side + 3))
    ]
    expected = reference(probes)
    width, height = spec.output_size
    if expected is None or expected.shape != (3, 3, height, width):
        return None
    if float(np.abs(fast(probes) - expected).max()) > FAST_PREPROCESS_TOLERANCE:
        return None
    return fast


def _resize(size: Any) -> tuple[str, tuple[int, int]] | None:
    shortest = _get(size, "shortest_edge")
    height, width = _get(size, "height"), _get(size, "width")
    if shortest and not (height or width) and not _get(size, "longest_edge"):
        return "shortest_edge", (shortest, shortest)
    if height and width and not shortest:
        return "exact", (width, height)
    return None


def _crop(image_processor: Any) -> tuple[int, int] | bool | None:
    """(width, height) of the centre crop, None for none, False when it cannot be read."""
    if not getattr(image_processor, "do_center_crop", False):
        return None
    crop = getattr(image_processor, "crop_size", None)
    height, width = _get(crop, "height"), _get(crop, "width")
    return (width, height) if height and width else False


def _three(values: Any) -> tuple[float, float, float] | None:
    if not isinstance(values, Sequence) or len(values) != 3:
        return None
    return float(values[0]), float(values[1]), float(values[2])


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _get(size: Any, key: str) -> int | None:
    if size is None or isinstance(size, int):
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if isinstance(value, int | float) and value else None
