"""Deterministic, product-like photos generated with Pillow (demo, tests, benchmarks).

Each seed gives one "product": a coloured, textured shape on a white studio background,
like a packshot. Nothing is downloaded; the same seed always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CATEGORIES = ("bags", "shoes", "shirts", "lamps", "mugs")
PALETTE = (
    (200, 30, 40), (30, 90, 200), (20, 140, 70), (240, 180, 20), (120, 60, 160),
    (20, 20, 20), (230, 110, 160), (100, 70, 40), (0, 160, 170), (180, 180, 180),
)


def product_image(seed: int, size: int = 512) -> Image.Image:
    """One synthetic packshot (RGB) for ``seed``: category shape, colour and texture."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    colour = PALETTE[rng.randrange(len(PALETTE))]
    accent = PALETTE[rng.randrange(len(PALETTE))]
    kind = CATEGORIES[seed % len(CATEGORIES)]
    s = size
    jitter = [rng.uniform(-0.06, 0.06) * s for _ in range(8)]
    if kind == "bags":
        draw.rounded_rectangle(
            (0.2 * s + jitter[0], 0.35 * s, 0.8 * s + jitter[1], 0.85 * s), 0.05 * s, fill=colour
        )
        draw.arc((0.35 * s, 0.15 * s, 0.65 * s, 0.55 * s), 180, 360, fill=accent, width=s // 30)
    elif kind == "shoes":
        draw.polygon(
            [(0.1 * s, 0.7 * s), (0.15 * s, 0.45 * s + jitter[2]), (0.45 * s, 0.5 * s),
             (0.85 * s + jitter[3], 0.62 * s), (0.9 * s, 0.72 * s)],
            fill=colour,
        )
        draw.rectangle((0.1 * s, 0.7 * s, 0.9 * s, 0.76 * s), fill=accent)
    elif kind == "shirts":
        draw.polygon(
            [(0.3 * s, 0.2 * s), (0.7 * s, 0.2 * s), (0.9 * s + jitter[4], 0.4 * s),
             (0.75 * s, 0.45 * s), (0.75 * s, 0.85 * s), (0.25 * s, 0.85 * s),
             (0.25 * s, 0.45 * s), (0.1 * s + jitter[5], 0.4 * s)],
            fill=colour,
        )
        for row in range(int(0.3 * s), int(0.85 * s), max(4, s // rng.choice((12, 20, 40)))):
            draw.line((0.25 * s, row, 0.75 * s, row), fill=accent, width=max(1, s // 100))
    elif kind == "lamps":
        draw.polygon(
            [(0.3 * s, 0.15 * s), (0.7 * s, 0.15 * s), (0.8 * s + jitter[6], 0.45 * s),
             (0.2 * s, 0.45 * s)],
            fill=colour,
        )
        draw.rectangle((0.47 * s, 0.45 * s, 0.53 * s, 0.8 * s), fill=(60, 60, 60))
        draw.ellipse((0.3 * s, 0.78 * s, 0.7 * s, 0.88 * s), fill=accent)
    else:  # mugs
        draw.rounded_rectangle((0.25 * s, 0.3 * s, 0.65 * s + jitter[7], 0.8 * s), s // 25,
                               fill=colour)
        draw.arc((0.55 * s, 0.4 * s, 0.8 * s, 0.65 * s), 270, 90, fill=colour, width=s // 20)
        dot = 0.05 * s
        cx, cy = 0.45 * s, 0.55 * s
        for k in range(6):
            angle = 2 * math.pi * k / 6 + rng.random()
            x, y = cx + 0.1 * s * math.cos(angle), cy + 0.1 * s * math.sin(angle)
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=accent)
    # A soft shadow and sensor noise make it closer to a photo than a flat drawing.
    image = image.filter(ImageFilter.GaussianBlur(radius=max(0.5, s / 700)))
    noise_rng = np.random.default_rng(seed)
    noise = noise_rng.normal(0.0, 4.0, (size, size, 1))
    pixels = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def product_jpeg(seed: int, size: int = 512, quality: int = 90) -> bytes:
    """``product_image`` encoded as JPEG bytes."""
    buffer = io.BytesIO()
    product_image(seed, size).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def category_for(seed: int) -> str:
    return CATEGORIES[seed % len(CATEGORIES)]
