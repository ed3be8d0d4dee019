"""The runtime accuracy gate's calibration images: deterministic, varied, generated here.

A runtime is compared with torch fp32 on these images (mean cosine, top-10 overlap), so they
must differ from each other in colour, layout and texture, and be the same on every machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def calibration_images(count: int, size: int = 256) -> list[Image.Image]:
    """``count`` RGB images: a shaded background, a few filled shapes, texture and noise."""
    return [_calibration_image(seed, size) for seed in range(count)]


def _calibration_image(seed: int, size: int) -> Image.Image:
    rng = np.random.default_rng(10_000 + seed)
    # A smooth two-colour gradient background (studio sweep or a coloured wall).
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    pixels = top * (1.0 - ramp) + bottom * ramp
    image = Image.fromarray(np.broadcast_to(pixels, (size, size, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.uniform(0.0, 0.7, size=2) * size
        width, height = rng.uniform(0.15, 0.6, size=2) * size
        box = (x0, y0, min(size - 1, x0 + width), min(size - 1, y0 + height))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) / 2, box[1]), (box[2], box[3])],
                         fill=colour)
        stripes = int(rng.integers(0, 12))
        for k in range(stripes):  # texture: stripes across the shape
            y = box[1] + (box[3] - box[1]) * (k + 0.5) / stripes
            draw.line((box[0], y, box[2], y), fill=tuple(255 - c for c in colour), width=2)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.5))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 5.0, (size, size, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
