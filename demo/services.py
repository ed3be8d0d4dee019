"""The demo: a generated catalog served on loopback, run through the real pipeline."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catalog.services.imports import KNOWN_COLUMNS, catalog_import
from demo.loopback import LoopbackServer
from demo.sample_images import category_for, product_image

logger = logging.getLogger(__name__)

DEMO_PORT = 8765  # a fixed port keeps image URLs stable across runs (re-runs skip downloads)


@dataclass(frozen=True)
class DemoImage:
    article_id: str
    title: str
    category: str
    path: str
    body: bytes


def demo_images(products: int = 60, duplicates: int = 10) -> list[DemoImage]:
    """Generated packshots plus re-listed copies of the first few (resized, recompressed)."""
    images = []
    for seed in range(products):
        image = product_image(seed, size=480)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88)
        category = category_for(seed)
        images.append(
            DemoImage(f"P{seed:04d}", f"{category.title()} {seed}", category,
                      f"/img/P{seed:04d}.jpg", buffer.getvalue())
        )
        if seed < duplicates:
            copy = io.BytesIO()
            image.resize((400, 400)).save(copy, "JPEG", quality=70)
            images.append(
                DemoImage(f"P{seed:04d}-B", f"{category.title()} {seed} (other seller)",
                          category, f"/img/P{seed:04d}-B.jpg", copy.getvalue())
            )
    return images


DEMO_MARK = "demo"  # an extra catalog column: kept in each demo article's metadata
MSG_NOT_A_DEMO_DATABASE = (
    "This database holds {count} articles that are not the demo's (e.g. {example!r}): the demo "
    "would import over them. Run the demo with its own data directory, e.g. "
    "LOOKALIKE_DATA_DIR=./var/demo make demo (and unset DATABASE_URL)."
)


class DemoRefused(Exception):
    """The demo will not run here (it would touch a real catalog); the message says why."""


def demo_database_check() -> None:
    """Refuse a database that holds any article the demo did not create."""
    from catalog.models import Article

    # exclude() on a missing JSON key is NULL, not true: select the demo's rows positively.
    ours = Article.objects.filter(**{f"metadata__{DEMO_MARK}": "1"}).values("pk")
    foreign = Article.objects.exclude(pk__in=ours)
    count = foreign.count()
    if count:
        example = foreign.values_list("article_id", flat=True).first()
        raise DemoRefused(MSG_NOT_A_DEMO_DATABASE.format(count=count, example=example))


def demo_run(
    *, out: Callable[[str], None], products: int = 60, model: str | None = None,
    port: int = DEMO_PORT,
) -> str:
    """Import, download, embed and index the demo catalog; return the model actually used.

    DemoRefused, before anything is written, when the database holds a real catalog.
    """
    from catalog.services.downloads import images_download
    from similarity.conf import similarity_settings
    from similarity.services.builds.model_choice import embedder_load_with_fallback
    from similarity.services.builds.runs import index_build_run

    demo_database_check()
    images = demo_images(products)
    with LoopbackServer(port=port) as server:
        rows = [
            {"article_id": image.article_id, "image_url": server.add(image.path, image.body),
             "title": image.title, "category": image.category, DEMO_MARK: "1"}
            for image in images
        ]
        catalog_path = similarity_settings().data_dir / "demo" / "catalog.csv"
        catalog_path.parent.mkdir(parents=True, exist_ok=True)
        catalog_path.write_text(catalog_rows_as_csv(rows))
        out(f"Demo catalog: {len(rows)} articles written to {catalog_path}")
        summary = catalog_import(path=catalog_path, deactivate_missing=True)
        out(f"Import: {summary.describe()}")
        downloaded = images_download(allow_private=True)  # the demo's server is on loopback
        out(f"Download: {downloaded}")

    requested = model or similarity_settings().model
    choice = embedder_load_with_fallback(spec=requested, log_fallback=False)  # the banner says it
    spec = choice.spec
    if choice.fell_back:
        banner = "!" * 78
        out(banner)
        for failed, error in choice.failures:
            out(f"! Model {failed!r} cannot be loaded here: {error}")
        out(f"! FALLING BACK to {spec!r}"
            + (" (ImageNet EfficientNet-Lite0: learned, offline)." if spec != "classic"
               else " (weight-free: a baseline for near-duplicates)."))
        out("! Provide the model as a local directory or in the Hugging Face cache and set")
        out("! LOOKALIKE_MODEL to use it.")
        out(banner)
    build = index_build_run(model=spec, trigger="demo")
    out(build.describe())
    out(build.runtime_summary())
    return spec


def catalog_rows_as_csv(rows: list[dict[str, Any]]) -> str:
    """Serialise rows to CSV text (used by the demo and tests to write catalogs)."""
    columns: list[str] = list(KNOWN_COLUMNS)
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
