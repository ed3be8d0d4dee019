"""Supplier matching on real photos: store photos matched against a catalog of packshots.

Usage: LOOKALIKE_REALPHOTOS=/work/shared/realphotos .venv/bin/python bench/bench_matching.py
       [--models classic,efficientnet-lite0] [--feed] [--keep DIR]

The catalog is the 81 packshots of ``<LOOKALIKE_REALPHOTOS>/grocery`` (one article per
product, stored with the catalog's one image writer, ``article_image_store``); the supplier
feed is a folder of the 486 store photos (phone photos taken in shops). Each model builds
its index, then ``supplier_photos_match`` (the service behind ``manage.py match_images``)
matches the folder; hit@1 / hit@5 = the right packshot first / in the top 5. Throughput is
the whole run (read, decode, embed, search, report) in photos per second; ``--feed`` also
matches the photos as a CSV feed served over HTTP on 127.0.0.1 (fetch path included). The distance of
the best match, for right and wrong answers, shows where a "similar" threshold would sit.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def realphotos_root() -> Path:
    return Path(os.environ.get("LOOKALIKE_REALPHOTOS") or ROOT.parent / "shared" / "realphotos")


def grocery_labels(root: Path) -> list[dict[str, str]]:
    with (root / "grocery" / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def setup(data_dir: Path) -> None:
    os.environ.update({
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-use-0123456789",
        "LOG_LEVEL": "WARNING",
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def catalog_from_packshots(labels: list[dict[str, str]], images: Path) -> int:
    from catalog.models import Article
    from catalog.services.images import article_image_store

    count = 0
    for row in labels:
        if row["kind"] != "packshot" or Article.objects.filter(article_id=row["product"]).exists():
            continue
        article = Article.objects.create(
            article_id=row["product"], title=row["product"], category=row["category"],
            image_url=f"https://shop.example/packshots/{row['image_file']}",
        )
        article_image_store(article=article, data=(images / row["image_file"]).read_bytes())
        count += 1
    return count


def supplier_folder(labels: list[dict[str, str]], images: Path, folder: Path) -> dict[str, str]:
    """A folder of symlinks to the store photos; supplier_ref -> the right product."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for row in labels:
        if row["kind"] != "store_photo":
            continue
        link = folder / row["image_file"]
        if not link.exists():
            link.symlink_to(images / row["image_file"])
        truth[Path(row["image_file"]).stem] = row["product"]
    return truth


def supplier_feed(folder: Path, server: object, work: Path) -> Path:
    """The same store photos as a CSV feed served over HTTP on 127.0.0.1 (the fetch path)."""
    feed = work / "supplier.csv"
    with feed.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["supplier_ref", "image_url"])
        for photo in sorted(folder.iterdir()):
            url = server.add(f"/{photo.name}", photo.read_bytes())  # type: ignore[attr-defined]
            writer.writerow([photo.stem, url])
    return feed


def measure(model: str, source: Path, truth: dict[str, str], work: Path,
            label: str = "folder") -> dict[str, object]:
    from lookalike_core.match_report import report_rows_read

    from similarity.services.builds.runs import index_build_run
    from similarity.services.matching.photos import supplier_photos_match

    build = index_build_run(model=model, progress=False, trigger="bench")
    if build.status not in ("succeeded", "unchanged"):
        raise SystemExit(f"{model}: build {build.status}: {build.error}")
    report = work / f"report-{model}-{label}.csv"
    report.unlink(missing_ok=True)
    summary = supplier_photos_match(source=source, output=report, k=5, progress=False,
                                    allow_private=True)
    hit1 = hit5 = 0
    right, wrong = [], []
    for row in report_rows_read(path=report):
        ids = [article_id for article_id, _ in row.matches]
        expected = truth[row.supplier_ref]
        hit1 += bool(ids) and ids[0] == expected
        hit5 += expected in ids
        if row.matches:
            (right if ids[0] == expected else wrong).append(row.matches[0][1])
    total = len(truth)
    return {
        "model": f"{model} ({label})", "photos": total, "errors": summary.failed,
        "hit1": hit1 / total, "hit5": hit5 / total,
        "photos_per_second": summary.photos_per_second,
        "after_load": total / max(1e-9, summary.timings["total_seconds"]
                                  - summary.timings["load_seconds"]),
        "seconds": summary.timings["total_seconds"],
        "timings": summary.timings, "counts": summary.counts,
        "thresholds": (summary.duplicate_threshold, summary.similar_threshold),
        "right_best": np.percentile(right, [10, 50, 90]).round(3).tolist() if right else [],
        "wrong_best": np.percentile(wrong, [10, 50, 90]).round(3).tolist() if wrong else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="classic", help="comma-separated model specs")
    parser.add_argument("--keep", default="", help="use (and keep) this data dir")
    parser.add_argument("--feed", action="store_true", help="also match the photos as a CSV "
                        "feed served over HTTP on 127.0.0.1 (measures the fetch path)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the feed's "
                        "server waits before each answer (a CDN across a real network)")
    args = parser.parse_args()
    root = realphotos_root()
    if not (root / "grocery" / "labels.csv").exists():
        raise SystemExit(f"{root / 'grocery'} is missing: set LOOKALIKE_REALPHOTOS")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-matching-"))
    work.mkdir(parents=True, exist_ok=True)
    setup(work)
    from bench.machine import cpu_model

    labels = grocery_labels(root)
    images = root / "grocery" / "images"
    added = catalog_from_packshots(labels, images)
    truth = supplier_folder(labels, images, work / "supplier")
    print(f"{cpu_model()} ({os.cpu_count()} CPUs), Python {platform.python_version()}; "
          f"{added} packshots added, {len(truth)} store photos; data dir {work}")
    print("| model | photos | hit@1 | hit@5 | photos/s (after loading) | run s "
          "| verdicts (dup/sim/new/err) "
          "| best distance p10/p50/p90: right / wrong |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    from demo.loopback import LoopbackServer

    runs = [(model.strip(), "folder") for model in args.models.split(",")]
    if args.feed:
        runs += [(model.strip(), "feed") for model in args.models.split(",")]
    with LoopbackServer(latency=args.latency) as server:
        feed = supplier_feed(work / "supplier", server, work) if args.feed else None
        for model, label in runs:
            source = work / "supplier" if label == "folder" else feed
            report_run(measure(model, source, truth, work, label))


def report_run(result: dict[str, object]) -> None:
    counts = result["counts"]
    print(f"| {result['model']} | {result['photos']} | {result['hit1']:.3f} | "
          f"{result['hit5']:.3f} | {result['photos_per_second']:.1f} "
          f"({result['after_load']:.1f}) | "
          f"{result['seconds']:.1f} | {counts['duplicate']}/{counts['similar']}/"
          f"{counts['new']}/{counts['error']} | {result['right_best']} / "
          f"{result['wrong_best']} |", flush=True)
    print(f"  timings: { {k: round(v, 2) for k, v in result['timings'].items()} }, "
          f"thresholds duplicate/similar: {result['thresholds']}", flush=True)

if __name__ == "__main__":
    main()
