"""Duplicate-threshold calibration on real photos: distinct-photo pairs vs near-copies, per model.

For each model, every pair of distinct photos under a threshold is a false duplicate; every
held-out near-copy (resized to half + JPEG 60, 6% crop, white frame, mirror, JPEG 60) within
it is found. Standalone (no Django). Usage:
    .venv/bin/python bench/calibrate_duplicates.py [--photos ../shared/realphotos/grocery]
        [--models classic,efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from similarity.engine.embedders import load_embedder

THRESHOLDS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.08)
BATCH = 32


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(image: Image.Image) -> Image.Image:
    width, height = image.size
    left, top = int(0.06 * width), int(0.06 * height)
    return image.crop((left, top, width - left, height - top))


VARIANTS = {
    "half+q60": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2)), 60),
    "crop6%": lambda im: _jpeg(_crop(im), 85),
    "white frame": lambda im: _jpeg(ImageOps.expand(im, border=im.width // 8, fill="white"), 85),
    "mirror": lambda im: _jpeg(ImageOps.mirror(im), 85),
    "q60": lambda im: _jpeg(im, 60),
}


def _embed(embedder, images: list[Image.Image]) -> np.ndarray:
    return np.concatenate([embedder.embed_images(images[i:i + BATCH])
                           for i in range(0, len(images), BATCH)])


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=str(root.parent / "shared/realphotos/grocery"))
    parser.add_argument("--models", default="classic,efficientnet-lite0")
    args = parser.parse_args()
    photos = Path(args.photos)
    with (photos / "labels.csv").open(newline="") as handle:
        files = [row["image_file"] for row in csv.DictReader(handle)]
    images = []
    for name in files:
        with Image.open(photos / "images" / name) as image:
            images.append(image.convert("RGB"))
    held = list(range(0, len(images), 3))
    for spec in args.models.split(","):
        embedder = load_embedder(spec)
        vectors = _embed(embedder, images)
        distances = (1 - vectors @ vectors.T)[np.triu_indices(len(vectors), 1)]
        copies = {
            name: 1 - (_embed(embedder, [change(images[i]) for i in held]) * vectors[held]).sum(1)
            for name, change in VARIANTS.items()
        }
        print(f"\n{spec} ({embedder.identity()}): {len(distances)} distinct-photo pairs, "
              f"{len(held)} copies per variant")
        print("| threshold | distinct pairs below | " + " | ".join(copies) + " |")
        print("|---:|---:|" + "---:|" * len(copies))
        for threshold in THRESHOLDS:
            found = " | ".join(f"{np.mean(d < threshold):.2f}" for d in copies.values())
            print(f"| {threshold} | {int((distances < threshold).sum())} | {found} |")


if __name__ == "__main__":
    main()
