"""manage.py evaluate: sanity and quality numbers for the current index (optionally labelled)."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from similarity.errors import SimilarityError
from similarity.services.duplicates import validate_threshold
from similarity.services.evaluation import format_report, index_evaluate, read_labels


class Command(BaseCommand):
    help = (
        "Self-retrieval sanity, recall of an approximate index against exact search and, with "
        "--labels (CSV article_id,group), recall/precision/mAP@k and the duplicate detector's "
        "precision/recall. --write-evalset DIR / --import-evalset DIR make the labelled demo "
        "catalog."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--labels", help="CSV with columns article_id,group.")
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--threshold", help="Duplicate threshold to score (default: setting).")
        parser.add_argument("--sample", type=int, help="Queries for approximate recall.")
        parser.add_argument("--json", dest="json_path", help="Also write the report as JSON.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["k"] < 1:
            raise CommandError(f"--k must be >= 1; got {options['k']}")
        if options["sample"] is not None and options["sample"] < 1:
            raise CommandError(f"--sample must be >= 1; got {options['sample']}")
        try:
            labels = read_labels(options["labels"]) if options["labels"] else None
            threshold = (
                None if options["threshold"] is None else validate_threshold(options["threshold"])
            )
            report = index_evaluate(
                k=options["k"], labels=labels, threshold=threshold, sample=options["sample"],
                progress=not options["no_progress"],
            )
        except (SimilarityError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(format_report(report))
        if options["json_path"]:
            with open(options["json_path"], "w", encoding="utf-8") as handle:
                json.dump(report.as_dict(), handle, indent=2)
