"""manage.py export_neighbors: every indexed article's k nearest other articles, CSV or JSONL."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from catalog.management.base import LookalikeCommand
from similarity.errors import InvalidQuery, SimilarityError
from similarity.selectors.validation import validate_k
from similarity.services.indexing.neighbors import neighbors_export, neighbors_store, output_format


class Command(LookalikeCommand):
    help = (
        "Write, for every indexed article, its k nearest other articles (the article itself is "
        "left out) with cosine distances. CSV (article_id,category,rank,neighbor_id,distance) "
        "or JSON Lines by the file extension; stdout (CSV) without --output."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--k", type=int, default=10, help="Neighbors per article (10).")
        parser.add_argument("--category-only", action="store_true",
                            help="Only neighbors from the article's own category.")
        parser.add_argument("--output", help="File to write (.csv, .jsonl or .ndjson).")
        parser.add_argument("--format", dest="fmt", choices=("csv", "jsonl"),
                            help="Override the format implied by the extension.")
        parser.add_argument("--batch-size", type=int, help="Query vectors per Faiss call.")
        parser.add_argument("--store", action="store_true",
                            help="Refresh the SimilarArticle table instead of writing a file.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        output = options["output"]
        try:
            k = validate_k(options["k"])
        except InvalidQuery as exc:
            raise CommandError(f"--{exc}") from exc
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be >= 1; got {options['batch_size']}")
        if output and not Path(output).resolve().parent.is_dir():
            raise CommandError(f"--output directory does not exist: {Path(output).parent}")
        try:
            output_format(output, options["fmt"])
            if options["store"]:
                if options["category_only"] or output:
                    raise CommandError("--store takes neither --output nor --category-only")
                run = neighbors_store(k=k, batch_size=options["batch_size"],
                                      progress=not options["no_progress"])
            else:
                run = neighbors_export(
                    k=k, output=output, fmt=options["fmt"],
                    category_only=options["category_only"], batch_size=options["batch_size"],
                    progress=not options["no_progress"],
                    stream=self.stdout,  # type: ignore[arg-type]  # OutputWrapper: a TextIOBase
                )
        except (SimilarityError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        where = output or ("the SimilarArticle table" if options["store"] else "stdout")
        self.stderr.write(
            f"{run.articles} articles, {run.rows} neighbors (k={k}) from build "
            f"{run.build_name} to {where} in {run.seconds:.1f} s ({run.per_second:.0f} articles/s)"
        )
