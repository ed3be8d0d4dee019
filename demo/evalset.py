"""A labelled evaluation catalog: generated packshots, each expanded into near-duplicates."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from catalog.models import Article
from catalog.services.images import article_image_store
from demo.sample_images import category_for, product_image

CATALOG_FILE = "catalog.csv"
LABELS_FILE = "labels.csv"
IMAGES_DIR = "images"
URL_PREFIX = "http://127.0.0.1:9/evalset/"  # never fetched: files are stored directly


def _jpeg(image: Image.Image, quality: int = 90) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue(), "jpg"


def _png(image: Image.Image) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), "png"


def _padded(image: Image.Image) -> Image.Image:
    width, height = image.size
    canvas = Image.new("RGB", (int(width * 1.5), height), (255, 255, 255))
    canvas.paste(image, ((canvas.width - width) // 2, 0))
    return canvas


def _cropped(image: Image.Image) -> Image.Image:
    width, height = image.size
    left, top = int(0.06 * width), int(0.06 * height)
    return image.crop((left, top, width - left, height - top))


def _colour_shifted(image: Image.Image) -> Image.Image:
    red, green, blue = image.split()
    return Image.merge("RGB", (
        red.point(lambda v: min(255, int(v * 1.06))), green, blue.point(lambda v: int(v * 0.94))
    ))


def _rgba(image: Image.Image) -> Image.Image:
    """The packshot with its white studio background made transparent."""
    grey = image.convert("L")
    alpha = grey.point(lambda v: 0 if v > 240 else 255)
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


# The copies a shop actually sees of one photo: name -> (image) -> (bytes, extension).
VARIANTS: dict[str, Callable[[Image.Image], tuple[bytes, str]]] = {
    "original": lambda im: _jpeg(im),
    "resized": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2))),
    "cropped": lambda im: _jpeg(_cropped(im)),
    "recompressed": lambda im: _jpeg(im, quality=25),
    "padded": lambda im: _jpeg(_padded(im)),
    "flipped": lambda im: _jpeg(ImageOps.mirror(im)),
    "colour_shifted": lambda im: _jpeg(_colour_shifted(im)),
    "png": lambda im: _png(im),
    "rgba": lambda im: _png(_rgba(im)),
    "cmyk": lambda im: _jpeg(im.convert("CMYK")),
    "palette": lambda im: _png(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)),
}


@dataclass(frozen=True)
class EvalsetFiles:
    directory: Path
    catalog: Path
    labels: Path
    articles: int
    groups: int


def evalset_write(
    directory: Path | str,
    *,
    groups: int = 20,
    distractors: int = 20,
    size: int = 256,
    first_seed: int = 1000,
    variants: tuple[str, ...] | None = None,
) -> EvalsetFiles:
    """Write images, a catalog CSV and a labels CSV (article_id,group) into ``directory``.

    ``groups`` products get every variant (one label per product); ``distractors`` more
    products appear once, each its own group.
    """
    if groups < 1 or distractors < 0 or size < 32:
        raise ValueError(
            f"need groups >= 1, distractors >= 0, size >= 32; got {groups}, {distractors}, {size}"
        )
    names = variants or tuple(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    root = Path(directory)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    catalog_rows, label_rows = [], []
    for number in range(groups + distractors):
        seed = first_seed + number
        image = product_image(seed, size=size)
        group = f"G{seed}"
        for name in names if number < groups else ("original",):
            data, extension = VARIANTS[name](image)
            article_id = f"{group}-{name}"
            filename = f"{article_id}.{extension}"
            (root / IMAGES_DIR / filename).write_bytes(data)
            catalog_rows.append({
                "article_id": article_id, "image_url": URL_PREFIX + filename,
                "title": f"Product {seed} ({name})", "category": category_for(seed),
            })
            label_rows.append({"article_id": article_id, "group": group})
    catalog = root / CATALOG_FILE
    labels = root / LABELS_FILE
    _write_csv(catalog, catalog_rows)
    _write_csv(labels, label_rows)
    return EvalsetFiles(root, catalog, labels, len(catalog_rows), groups + distractors)


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def evalset_import(directory: Path | str) -> int:
    """Import an evalset's catalog and store its images as already downloaded; returns count.

    Stands in for download_images (the URLs point nowhere): stored by the catalog's image
    writer, as a real download is.
    """
    from catalog.services.imports import catalog_import

    root = Path(directory)
    catalog_import(path=root / CATALOG_FILE)
    count = 0
    for article in Article.objects.filter(image_url__startswith=URL_PREFIX):
        source = root / IMAGES_DIR / article.image_url.removeprefix(URL_PREFIX)
        article_image_store(article=article, data=source.read_bytes())
        count += 1
    return count
