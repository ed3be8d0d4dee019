"""Verified supplier matching on real photos: quality and cost, through the product's commands.

Usage: LOOKALIKE_REALPHOTOS=/work/shared/realphotos cpulock -x .venv/bin/python \\
       bench/bench_verification.py [--model efficientnet-lite0] [--every 1] [--keep DIR]

Catalog: the packshots of ``<LOOKALIKE_REALPHOTOS>/grocery`` minus HELD_OUT products (every
fifth product in name order: 16 of 81), imported with ``manage.py import_folder --labels``;
``manage.py build_index --model M`` (its "local features" step timed); then the shop photos
matched by ``supplier_photos_match`` (the service of ``manage.py match_images``) with and
without verification. Quality: hit@1 / hit@5 over the photos of products in the catalog
(all, and packaged goods), `same` precision (the first match is the right article) and
recall, and the share of held-out products' photos judged `new`. Cost: verification seconds
per photo, photos/s with and without, build seconds and disk per article for the features.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACKAGED = {"juice", "milk", "yoghurt", "sour-cream", "soyghurt", "soy-milk", "oatghurt",
            "oat-milk", "sour-milk"}


def realphotos_root() -> Path:
    return Path(os.environ.get("LOOKALIKE_REALPHOTOS") or ROOT.parent / "shared" / "realphotos")


def grocery_labels(root: Path) -> list[dict[str, str]]:
    with (root / "grocery" / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def held_out(labels: list[dict[str, str]]) -> set[str]:
    """Every fifth product in name order (16 of the 81), not in the catalog."""
    products = sorted({row["product"] for row in labels})
    return {product for rank, product in enumerate(products) if rank % 5 == 2}


def setup(data_dir: Path) -> None:
    os.environ.update({
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
        "LOG_LEVEL": "WARNING",
        "MEDIA_ROOT": str(data_dir / "media"),
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def import_catalog(labels: list[dict[str, str]], images: Path, work: Path,
                   held: set[str]) -> int:
    """``manage.py import_folder`` with a labels file listing the kept packshots."""
    from django.core.management import call_command

    listing = work / "packshots.csv"
    kept = [row for row in labels if row["kind"] == "packshot" and row["product"] not in held]
    with listing.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["article_id", "image_file", "category"])
        for row in kept:
            writer.writerow([row["product"], row["image_file"], row["category"]])
    call_command("import_folder", str(images), labels=str(listing), stdout=io.StringIO())
    return len(kept)


def shop_folder(labels: list[dict[str, str]], images: Path, folder: Path,
                every: int) -> dict[str, str]:
    """Symlinks to every ``every``-th shop photo; supplier_ref -> its product."""
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, str] = {}
    shop = [row for row in labels if row["kind"] == "store_photo"]
    for row in shop[::every]:
        shutil.copyfile(images / row["image_file"], folder / row["image_file"])  # no links: refused
        truth[Path(row["image_file"]).stem] = row["product"]
    return truth


def quality(report: Path, truth: dict[str, str], held: set[str],
            category: dict[str, str]) -> dict[str, float]:
    """hit@1 / hit@5 (all, packaged), same precision / recall, held-out judged new."""
    from lookalike_core.match_report import NEW, SAME, report_rows_read

    rows = list(report_rows_read(path=report))
    known = [row for row in rows if truth[row.supplier_ref] not in held]
    packaged = [row for row in known if category[truth[row.supplier_ref]] in PACKAGED]
    unknown = [row for row in rows if truth[row.supplier_ref] in held]

    def hit(group: list, at: int) -> float:
        found = [truth[row.supplier_ref] in [a for a, _ in row.matches[:at]] for row in group]
        return sum(found) / max(1, len(found))

    same = [row for row in known if row.verdict == SAME]
    right = sum(row.matches[0][0] == truth[row.supplier_ref] for row in same)
    return {
        "photos": len(rows), "in_catalog": len(known), "held_out": len(unknown),
        "hit1": hit(known, 1), "hit5": hit(known, 5),
        "hit1_packaged": hit(packaged, 1), "hit5_packaged": hit(packaged, 5),
        "same": len(same), "same_precision": right / max(1, len(same)),
        "same_recall": right / max(1, len(known)),
        "held_out_new": sum(row.verdict == NEW for row in unknown) / max(1, len(unknown)),
        "held_out_same": sum(row.verdict == SAME for row in unknown),
    }


def run(model: str, every: int, work: Path, *, modes: tuple[bool, ...] = (False, True)
        ) -> dict[str, object]:
    from django.core.management import call_command

    from similarity.conf import similarity_settings
    from similarity.services.matching.photos import supplier_photos_match

    root = realphotos_root()
    labels = grocery_labels(root)
    images = root / "grocery" / "images"
    held = held_out(labels)
    category = {row["product"]: row["category"] for row in labels}
    articles = import_catalog(labels, images, work, held)
    started = time.perf_counter()
    call_command("build_index", model=model, no_progress=True, stdout=io.StringIO())
    build_seconds = time.perf_counter() - started
    from similarity.models import IndexBuild

    timings = IndexBuild.objects.latest("pk").timings
    features_dir = similarity_settings().local_features_root
    files = list(features_dir.rglob("*.npz"))
    disk = sum(path.stat().st_size for path in files)
    truth = shop_folder(labels, images, work / "shop", every)
    results: dict[str, object] = {
        "model": model, "articles": articles, "held_out_products": len(held),
        "build_seconds": round(build_seconds, 2),
        "local_features_seconds": timings.get("local_features_seconds"),
        "features_files": len(files), "features_bytes_per_article": disk // max(1, len(files)),
    }
    for verify in modes:
        name = "verified" if verify else "global"
        # One warm-up photo so the model's one-time load is not in photos/s.
        summary = supplier_photos_match(source=work / "shop", output=work / f"{name}.csv", k=5,
                                        verify=verify, progress=False)
        photos = summary.matched + summary.failed
        run_seconds = summary.timings["total_seconds"] - summary.timings["load_seconds"]
        results[name] = {
            **{key: round(value, 3) for key, value in
               quality(work / f"{name}.csv", truth, held, category).items()},
            "photos_per_second": round(photos / run_seconds, 2),
            "verify_seconds_per_photo": round(summary.timings["verify_seconds"] / photos, 4),
            "embed_seconds": round(summary.timings["embed_seconds"], 2),
            "counts": summary.counts,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--every", type=int, default=1, help="Every n-th shop photo.")
    parser.add_argument("--keep", help="Work in this folder and keep it.")
    parser.add_argument("--verified-only", action="store_true",
                        help="Skip the global-only run (calibration).")
    args = parser.parse_args()
    if not (realphotos_root() / "grocery" / "labels.csv").is_file():
        sys.exit(f"{realphotos_root()}/grocery is absent (set LOOKALIKE_REALPHOTOS)")
    with tempfile.TemporaryDirectory(prefix="bench-verification-") as temp:
        work = Path(args.keep or temp)
        work.mkdir(parents=True, exist_ok=True)
        setup(work)
        results = run(args.model, args.every, work,
                      modes=(True,) if args.verified_only else (False, True))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}")
    for key, value in results.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
