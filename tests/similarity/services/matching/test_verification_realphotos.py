"""Verified supplier matching on real photos, through the product's commands: the packshots
of 65 products imported (16 held out), an efficientnet-lite0 index, every second shop photo
matched with verification. Asserts the issue's targets loosely (docs/benchmarks.md,
"Verification", has the full-set figures; `same` recall there is 0.29, under the 0.30 aimed
for). Needs ``$LOOKALIKE_REALPHOTOS/grocery`` (default ``<project>/../shared/realphotos``);
skipped with the reason when absent.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from lookalike_core.match_report import NEW, SAME, report_rows_read

from similarity.services.matching.photos import supplier_photos_match

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[4]
GROCERY = Path(os.environ.get("LOOKALIKE_REALPHOTOS") or ROOT.parent / "shared" / "realphotos"
               ) / "grocery"
PACKAGED = {"juice", "milk", "yoghurt", "sour-cream", "soyghurt", "soy-milk", "oatghurt",
            "oat-milk", "sour-milk"}


@pytest.fixture
def labels() -> list[dict[str, str]]:
    if not (GROCERY / "labels.csv").is_file():
        pytest.skip(f"{GROCERY} is absent (set LOOKALIKE_REALPHOTOS to the realphotos folder)")
    with (GROCERY / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_verified_matching_meets_the_targets_loosely(labels, tmp_path):
    products = sorted({row["product"] for row in labels})
    held = {product for rank, product in enumerate(products) if rank % 5 == 2}
    category = {row["product"]: row["category"] for row in labels}
    listing = tmp_path / "packshots.csv"
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["article_id", "image_file"])
        for row in labels:
            if row["kind"] == "packshot" and row["product"] not in held:
                writer.writerow([row["product"], row["image_file"]])
    call_command("import_folder", str(GROCERY / "images"), labels=str(listing),
                 stdout=io.StringIO())
    call_command("build_index", model="efficientnet-lite0", no_progress=True,
                 stdout=io.StringIO())
    folder = tmp_path / "shop"
    folder.mkdir()
    truth = {}
    for row in [row for row in labels if row["kind"] == "store_photo"][::2]:
        shutil.copyfile(GROCERY / "images" / row["image_file"], folder / row["image_file"])
        truth[Path(row["image_file"]).stem] = row["product"]

    summary = supplier_photos_match(source=folder, output=tmp_path / "report.csv", k=5,
                                    progress=False)

    assert summary.verified and summary.failed == 0
    rows = list(report_rows_read(path=tmp_path / "report.csv"))
    known = [row for row in rows if truth[row.supplier_ref] not in held]
    packaged = [row for row in known if category[truth[row.supplier_ref]] in PACKAGED]
    unknown = [row for row in rows if truth[row.supplier_ref] in held]

    def hit(group: list, at: int) -> float:
        return sum(truth[r.supplier_ref] in [a for a, _ in r.matches[:at]] for r in group
                   ) / len(group)

    same = [row for row in known if row.verdict == SAME]
    right = sum(row.matches[0][0] == truth[row.supplier_ref] for row in same)
    # Full set: hit@1 0.52, packaged 0.79, hit@5 0.79 (global only 0.75), same 1.00 / 0.29,
    # held-out new 0.92.
    assert hit(known, 1) >= 0.45 and hit(packaged, 1) >= 0.65 and hit(known, 5) >= 0.72
    assert right / max(1, len(same)) >= 0.9 and right / len(known) >= 0.25
    assert sum(row.verdict == NEW for row in unknown) / len(unknown) >= 0.85
    verified = [row for row in same if row.candidates[0].inliers is not None]
    assert verified and all(row.candidates[0].inliers >= 8 for row in verified)
