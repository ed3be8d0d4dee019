"""manage.py import_catalog PATH: upsert articles from CSV or JSON Lines."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from catalog.exitcodes import EXIT_PARTIAL
from catalog.feeds import FORMATS
from catalog.management.base import LookalikeCommand
from catalog.services.imports import CatalogImportError, catalog_import

EXIT_ROWS_SKIPPED = EXIT_PARTIAL  # the file imported but some rows were skipped


class Command(LookalikeCommand):
    help = (
        "Import (upsert) a catalog from CSV or JSON Lines (article_id, image_url), a Google "
        "Merchant Center feed (TSV or XML) or a Shopify product CSV. Lookalike columns: "
        "article_id, image_url; optional: title, category, additional_image_urls, item_group_id, "
        "availability; other columns are kept as metadata. "
        f"Exits {EXIT_ROWS_SKIPPED} when rows were skipped, 1 when the file is unusable."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "path", help="Catalog file (.csv, .tsv, .txt, .jsonl, .ndjson or .xml)."
        )
        parser.add_argument(
            "--format", choices=FORMATS, default=None,
            help="The feed's format; recognised by its header when not given.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate and report, write nothing."
        )
        parser.add_argument(
            "--deactivate-missing",
            action="store_true",
            help="The file is the full catalog: deactivate active articles not in it.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = catalog_import(
                path=options["path"],
                dry_run=options["dry_run"],
                deactivate_missing=options["deactivate_missing"],
                format=options["format"],
            )
        except CatalogImportError as exc:
            raise CommandError(str(exc)) from exc
        for skipped in summary.skipped:
            self.stderr.write(f"line {skipped.line}: skipped: {skipped.reason}")
        for warning in summary.warnings:
            self.stderr.write(f"line {warning.line}: {warning.reason}")
        self.stdout.write(f"{options['path']} ({summary.format} feed): {summary.describe()}")
        done = "validated, nothing written" if options["dry_run"] else "imported"
        if summary.skipped:
            raise CommandError(
                f"{len(summary.skipped)} row(s) skipped; the other rows were {done}",
                returncode=EXIT_ROWS_SKIPPED,
            )
        if summary.warnings:
            raise CommandError(
                f"{len(summary.warnings)} additional image URL(s) dropped; the rows were {done}",
                returncode=EXIT_ROWS_SKIPPED,
            )
