"""The classic descriptor (DCT shape + HSV colour): weight-free, pure numpy/Pillow.

Server and client compute it with this one module; the product's ``ClassicEmbedder``
(``similarity.engine.embedders.classic``) wraps it as an embedder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SHAPE_SIDE = 32  # grey thumbnail for the DCT, as in perceptual hashing
SHAPE_COEFFS = 8  # top-left 8x8 DCT block minus DC: coarse layout, blind to fine detail
COLOUR_SIDE = 64
HUE_BINS, SAT_BINS, VAL_BINS = 8, 3, 3  # chromatic pixels
GREY_BINS = 8  # achromatic pixels (saturation below GREY_SATURATION), by brightness only
GREY_SATURATION = 0.2
# cosine = 0.3 * shape cosine + 0.7 * colour cosine. Measured on the real grocery photos
# (docs/benchmarks.md): 0.6/0.4 gave product recall@5 0.105, 0.4/0.6 0.142, 0.3/0.7 0.164,
# 0.2/0.8 0.188; 0.3 keeps enough layout to tell same-coloured generated packshots apart.
SHAPE_WEIGHT, COLOUR_WEIGHT = 0.3, 0.7
FRAME_SIDE = 256  # thumbnail on which a uniform padding frame is found
FRAME_ROW_FRACTION = 0.98  # a row/column this uniform (in the border colour) is padding
BACKGROUND_TOLERANCE = 24  # grey levels a pixel may differ from the border and still be background
MIN_CONTENT_FRACTION = 0.05  # smaller detected content means "no clear background": keep all
# Descriptor length: 63 DCT coefficients + 72 colour bins + 8 grey bins.
DIMENSION = (SHAPE_COEFFS * SHAPE_COEFFS - 1) + HUE_BINS * SAT_BINS * VAL_BINS + GREY_BINS
# Enough pixels for the thumbnails; lets JPEGs decode at 1/8.
IMAGE_SIZE = 4 * SHAPE_SIDE


def describe(image: Image.Image) -> np.ndarray:
    """The (unnormalised-overall, block-weighted) descriptor of one RGB image."""
    content = trim_background(strip_frame(image.convert("RGB")))
    shape = _dct_block(content)
    colour = _colour_histogram(content)
    return np.concatenate([np.sqrt(SHAPE_WEIGHT) * shape, np.sqrt(COLOUR_WEIGHT) * colour])


def strip_frame(image: Image.Image) -> Image.Image:
    """Remove a uniform frame: outer rows/columns almost entirely of the border colour."""
    small = image.copy()
    small.thumbnail((FRAME_SIDE, FRAME_SIDE))
    pixels = np.asarray(small, dtype=np.int16)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    close = np.abs(pixels - np.median(border, axis=0)).max(axis=2) <= BACKGROUND_TOLERANCE
    height, width = close.shape
    top, bottom = _frame_span(close.mean(axis=1) >= FRAME_ROW_FRACTION)
    left, right = _frame_span(close.mean(axis=0) >= FRAME_ROW_FRACTION)
    if (top, bottom, left, right) == (0, height, 0, width):
        return image
    if (bottom - top) * (right - left) < MIN_CONTENT_FRACTION * height * width:
        return image
    scale_x, scale_y = image.width / width, image.height / height
    return image.crop((round(left * scale_x), round(top * scale_y),
                       round(right * scale_x), round(bottom * scale_y)))


def _frame_span(uniform: np.ndarray) -> tuple[int, int]:
    """[start, end) between the leading and trailing runs of True."""
    content = np.flatnonzero(~uniform)
    if content.size == 0:
        return 0, len(uniform)
    return int(content[0]), int(content[-1]) + 1


def trim_background(image: Image.Image) -> Image.Image:
    """Crop to the box of pixels that differ from the border colour (with a small margin)."""
    small = image.copy()
    small.thumbnail((128, 128))
    pixels = np.asarray(small, dtype=np.int16)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    foreground = np.abs(pixels - background).max(axis=2) > BACKGROUND_TOLERANCE
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return image
    height, width = foreground.shape
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if (bottom - top) * (right - left) < MIN_CONTENT_FRACTION * height * width:
        return image
    margin = 2
    scale_x, scale_y = image.width / width, image.height / height
    box = (
        max(0, round((left - margin) * scale_x)),
        max(0, round((top - margin) * scale_y)),
        min(image.width, round((right + margin) * scale_x)),
        min(image.height, round((bottom + margin) * scale_y)),
    )
    return image.crop(box)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``D @ x`` is scipy's ``dct(x, norm="ortho")``."""
    k = np.arange(n)[:, None]
    samples = np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * samples + 1) * k / (2 * n))
    matrix[0] /= np.sqrt(2.0)
    return np.asarray(matrix, dtype=np.float64)


_DCT = dct_matrix(SHAPE_SIDE)


def _dct_block(image: Image.Image) -> np.ndarray:
    grey = image.convert("L").resize((SHAPE_SIDE, SHAPE_SIDE), Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.float64) / 255.0
    coefficients = _DCT @ pixels @ _DCT.T  # 2D DCT-II, orthonormal (scipy's dctn, norm="ortho")
    block = coefficients[:SHAPE_COEFFS, :SHAPE_COEFFS].copy()
    block[:, 1::2] = np.abs(block[:, 1::2])  # odd in x: a mirror flips their sign
    block = block.ravel()[1:]  # drop DC (mean brightness)
    block = np.sign(block) * np.sqrt(np.abs(block))
    return _unit(block)


def _colour_histogram(image: Image.Image) -> np.ndarray:
    thumb = image.resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX)
    hsv = np.asarray(thumb.convert("HSV"), dtype=np.float64).reshape(-1, 3) / 256.0
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    grey = sat < GREY_SATURATION
    grey_hist = np.bincount((val[grey] * GREY_BINS).astype(int), minlength=GREY_BINS)
    chroma_sat = (sat[~grey] - GREY_SATURATION) / (1.0 - GREY_SATURATION)
    index = (
        (hue[~grey] * HUE_BINS).astype(int) * SAT_BINS * VAL_BINS
        + np.minimum((chroma_sat * SAT_BINS).astype(int), SAT_BINS - 1) * VAL_BINS
        + (val[~grey] * VAL_BINS).astype(int)
    )
    chroma_hist = np.bincount(index, minlength=HUE_BINS * SAT_BINS * VAL_BINS)
    histogram = np.concatenate([chroma_hist, grey_hist]).astype(np.float64)
    return _unit(np.sqrt(histogram / max(histogram.sum(), 1.0)))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector
