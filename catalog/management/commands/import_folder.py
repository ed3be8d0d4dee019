"""manage.py import_folder DIR: a folder of photos becomes a catalog (no network)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from catalog.management.commands.import_catalog import EXIT_ROWS_SKIPPED
from catalog.services.folders import FolderImportError, catalog_import_folder


class Command(BaseCommand):
    help = (
        "Import a folder of photos (jpg, png, webp, gif; sub-folders included) as a catalog: "
        "article id = path without extension (sub-folders included), category = sub-folder, "
        "title = file name; images are copied in and validated. Re-running changes nothing. "
        f"Exits {EXIT_ROWS_SKIPPED} when files were skipped, 1 when the folder is unusable."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("directory", help="Folder of photos.")
        parser.add_argument(
            "--labels",
            help="CSV with article_id,image_file (relative to the folder) and optional title, "
            "category and other columns (kept as metadata): only listed files are imported.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate and report, write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = catalog_import_folder(
                directory=options["directory"], labels=options["labels"],
                dry_run=options["dry_run"],
            )
        except FolderImportError as exc:
            raise CommandError(str(exc)) from exc
        for skipped in summary.skipped:
            self.stderr.write(f"{skipped.file}: skipped: {skipped.reason}")
        self.stdout.write(f"{options['directory']}: {summary.describe()}")
        if summary.skipped:
            raise CommandError(
                f"{len(summary.skipped)} file(s) skipped; the others were imported",
                returncode=EXIT_ROWS_SKIPPED,
            )
