"""Synthetic pictures for verification tests: textured 'packshots' and tilted, cluttered
'shop photos' of them."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def textured(seed: int, size: int = 300) -> np.ndarray:
    """A 'packshot': random rectangles, circles and text on white (plenty of corners)."""
    rng = np.random.default_rng(seed)
    picture = np.full((size, size, 3), 255, np.uint8)
    for _ in range(40):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(0, size - 40, 2))
        if rng.random() < 0.5:
            cv2.rectangle(picture, (x, y), (x + int(rng.integers(10, 60)),
                                            y + int(rng.integers(10, 60))), colour, -1)
        else:
            cv2.circle(picture, (x + 20, y + 20), int(rng.integers(5, 25)), colour, 2)
        cv2.putText(picture, f"{seed}{x}", (x, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    colour, 2)
    return picture


def shop_photo(packshot: np.ndarray, seed: int) -> np.ndarray:
    """The packshot tilted in perspective in the middle of a cluttered, noisy photo."""
    clutter = cv2.resize(textured(seed + 1000, 200), (480, 480))
    side = packshot.shape[0]
    source = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    target = np.float32([[130, 110], [360, 140], [350, 370], [120, 350]])
    warped = cv2.warpPerspective(packshot, cv2.getPerspectiveTransform(source, target),
                                 (480, 480))
    mask = cv2.warpPerspective(np.full(packshot.shape[:2], 255, np.uint8),
                               cv2.getPerspectiveTransform(source, target), (480, 480))
    photo = np.where(mask[..., None] > 0, warped, clutter)
    noise = np.random.default_rng(seed).normal(0, 4, photo.shape)
    return np.clip(photo + noise, 0, 255).astype(np.uint8)


def pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array)
