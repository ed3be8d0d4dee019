"""Quality on real grocery photos (../shared/realphotos): the learned model beats classic.

Runs the product's own path on a subset of the products: import_folder --labels ->
evaluate --models classic,efficientnet-lite0 (which builds the index with each) -> scores.
The photos live outside the repository: LOOKALIKE_REALPHOTOS (default
``<project root>/../shared/realphotos``); the tests skip, saying so, where they are absent.
"""

from __future__ import annotations

import csv
import json
import os
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from PIL import Image, ImageOps

from similarity.engine.embedders import load_embedder

PHOTOS = Path(
    os.environ.get("LOOKALIKE_REALPHOTOS") or Path(settings.BASE_DIR).parent / "shared/realphotos"
) / "grocery"
PRODUCT_STRIDE = 5  # every 5th product (17 of 81, 119 photos): well under a minute on 2 cores

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PHOTOS / "labels.csv").is_file(),
        reason=f"real photos not found at {PHOTOS} (set LOOKALIKE_REALPHOTOS to the folder "
        "holding grocery/)",
    ),
]


def subset_labels(target: Path) -> list[dict[str, str]]:
    with (PHOTOS / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    products = sorted({row["product"] for row in rows})[::PRODUCT_STRIDE]
    chosen = [row for row in rows if row["product"] in products]
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return chosen


@pytest.mark.django_db
def test_efficientnet_beats_classic_on_real_photos(tmp_path):
    labels = tmp_path / "labels.csv"
    chosen = subset_labels(labels)
    out = StringIO()
    # Files of the products left out are "not listed": import_folder exits 2 for them.
    with pytest.raises(CommandError) as skipped:
        call_command("import_folder", str(PHOTOS / "images"), "--labels", str(labels),
                     stdout=out, stderr=StringIO())
    assert getattr(skipped.value, "returncode", None) == 2
    assert f"{len(chosen)} new" in out.getvalue()
    report = tmp_path / "report.json"
    table = StringIO()
    call_command("evaluate", "--labels", str(labels), "--models", "classic,efficientnet-lite0",
                 "--query-kind", "store_photo", "--catalog-kind", "packshot",
                 "--json", str(report), "--no-progress", stdout=table)
    print(table.getvalue())
    classic, learned = (row["retrieval"] for row in json.loads(report.read_text()))
    assert learned["product_recall_at_5"] >= classic["product_recall_at_5"] + 0.15
    assert learned["product_hit_at_1"] >= classic["product_hit_at_1"] + 0.15
    assert learned["category_precision_at_k"] >= classic["category_precision_at_k"] + 0.1
    assert learned["supplier_hit_at_5"] >= classic["supplier_hit_at_5"] + 0.2


def test_classic_finds_mirrored_and_padded_real_photos():
    with (PHOTOS / "labels.csv").open(newline="") as handle:
        files = [row["image_file"] for row in csv.DictReader(handle)][::6]
    photos = []
    for name in files:
        with Image.open(PHOTOS / "images" / name) as image:
            image.draft("RGB", (256, 256))
            photos.append(image.convert("RGB"))
    classic = load_embedder("classic")
    catalog = classic.embed_images(photos)
    held_out = list(range(0, len(photos), 5))

    def padded(image: Image.Image) -> Image.Image:
        return ImageOps.expand(image, border=image.width // 8, fill="white")

    for change in (ImageOps.mirror, padded):
        copies = classic.embed_images([change(photos[i]) for i in held_out])
        assert np.argmax(copies @ catalog.T, axis=1).tolist() == held_out, change
