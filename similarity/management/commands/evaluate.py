"""manage.py evaluate: sanity and quality numbers for the current index (optionally labelled)."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from catalog.management.base import LookalikeCommand
from similarity.errors import BuildFailed, InvalidQuery, SimilarityError
from similarity.selectors.duplicates import validate_threshold
from similarity.selectors.validation import validate_k
from similarity.services.evaluation.evaluate import (
    format_models_table,
    format_report,
    index_evaluate,
    models_evaluate,
)
from similarity.services.evaluation.labelled import labels_read


class Command(LookalikeCommand):
    help = (
        "Self-retrieval sanity, recall of an approximate index against exact search and, with "
        "--labels (CSV article_id plus group/product and/or category, optional kind), "
        "same-product recall/hit@1/mAP, same-category precision@k, the supplier case "
        "(--query-kind/--catalog-kind) and the duplicate detector's precision/recall. "
        "--models a,b builds and evaluates each model in turn and prints one row per model."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--labels", help="CSV with article_id and group/product, category, "
                            "kind columns.")
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--threshold", help="Duplicate threshold to score (default: setting).")
        parser.add_argument("--sample", type=int, help="Queries for approximate recall.")
        parser.add_argument("--models", help="Comma-separated models: build the index with "
                            "each in turn and report one row per model (needs --labels).")
        parser.add_argument("--query-kind", help="Supplier case: queries of this kind "
                            "(labels column kind), e.g. store_photo.")
        parser.add_argument("--catalog-kind", help="Supplier case: searched among items of "
                            "this kind, e.g. packshot.")
        parser.add_argument("--json", dest="json_path", help="Also write the report as JSON.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            k = validate_k(options["k"])
        except InvalidQuery as exc:
            raise CommandError(f"--{exc}") from exc
        if options["sample"] is not None and options["sample"] < 1:
            raise CommandError(f"--sample must be >= 1; got {options['sample']}")
        if bool(options["query_kind"]) != bool(options["catalog_kind"]):
            raise CommandError("--query-kind and --catalog-kind go together")
        models = [m.strip() for m in (options["models"] or "").split(",") if m.strip()]
        if options["models"] is not None and not models:
            raise CommandError(f"--models names no model; got {options['models']!r}")
        if models and not options["labels"]:
            raise CommandError("--models needs --labels")
        kinds = {"query_kind": options["query_kind"], "catalog_kind": options["catalog_kind"]}
        progress = not options["no_progress"]
        try:
            labels = labels_read(path=options["labels"]) if options["labels"] else None
            threshold = (
                None if options["threshold"] is None else validate_threshold(options["threshold"])
            )
            if models and labels is not None:  # --models without --labels is refused above
                reports = models_evaluate(models=models, labels=labels, k=k,
                                          progress=progress, **kinds)
            else:
                reports = [index_evaluate(
                    k=k, labels=labels, threshold=threshold, sample=options["sample"],
                    progress=progress, **kinds,
                )]
        except (SimilarityError, BuildFailed, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if models:
            self.stdout.write(format_models_table(reports))
        else:
            self.stdout.write(format_report(reports[0]))
        if options["json_path"]:
            data = [r.as_dict() for r in reports]
            with open(options["json_path"], "w", encoding="utf-8") as handle:
                json.dump(data if models else data[0], handle, indent=2)
