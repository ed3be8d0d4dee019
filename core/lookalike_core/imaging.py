"""Decode any photo a shop may hold (JPEG, PNG, GIF, WEBP, TIFF...) into an upright RGB image."""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

ImageSource = str | Path | bytes | BinaryIO

WHITE = (255, 255, 255)

# Errors Pillow raises for input that is not a (complete, sane) image. Pillow's
# decompression-bomb check stays on: MAX_IMAGE_PIXELS is never touched here.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)


class ImageDecodeError(ValueError):
    """The input could not be decoded as an image; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot decode image: {reason}")
        self.reason = reason


def load_image(source: ImageSource, *, target_size: int | None = None) -> Image.Image:
    """Decode ``source`` into an RGB image, upright per its EXIF orientation.

    ``target_size`` lets JPEGs decode at a reduced DCT scale (1/2, 1/4, 1/8) while both
    sides stay >= ``target_size``: much faster for the big photos models shrink anyway.
    Transparent areas are composited on white (packshot background); animations give
    their first frame. Raises ``ImageDecodeError`` for missing, broken or non-image input.
    """
    if target_size is not None and target_size <= 0:
        raise ValueError(f"target_size must be > 0; got {target_size}")
    try:
        with _open(source) as image:
            if target_size is not None and image.format == "JPEG":
                image.draft("RGB", (target_size, target_size))
            image.load()
            upright = _exif_upright(image)
            return to_rgb(upright)
    except ImageDecodeError:
        raise
    except FileNotFoundError as error:
        raise ImageDecodeError(f"file not found: {error.filename}") from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError("not an image (unrecognised format)") from error
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(f"too many pixels (decompression bomb guard): {error}") from error
    except _DECODE_ERRORS as error:
        raise ImageDecodeError(_describe(error)) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha on white, 16-bit scaled down, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        return _composite_on_white(image)
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageDecodeError(f"unsupported colour mode {mode!r}") from error


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, bytes | bytearray | memoryview):
        return Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, str | Path):
        return Image.open(Path(source))
    return Image.open(source)


def _exif_upright(image: Image.Image) -> Image.Image:
    # A broken EXIF block should not cost us the picture: keep it as stored.
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as error:
        logger.debug("Ignoring unreadable EXIF orientation: %s", error)
        return image.copy()
    return upright if upright is not None else image


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # convert("RGB") would clip 16-bit samples at 255 (an all-white picture); scale instead.
    # "I;16*" is always 16-bit; "I"/"F" hold 16-bit data when any value exceeds 8 bits.
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (pixels.size and pixels.max() > 255):
        pixels = pixels / 257.0
    grey = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if "truncated" in text.lower():
        return f"truncated image data ({text})"
    return f"broken image data ({type(error).__name__}: {text})"
