"""Download the images of active articles that are pending or changed (see images_download)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from catalog.exitcodes import EXIT_PARTIAL
from catalog.management.base import LookalikeCommand
from catalog.services.downloads import images_download

FAILURES_SHOWN = 20


class Command(LookalikeCommand):
    help = (
        "Download pending or changed article images concurrently; failures are recorded "
        "on each article and listed in the summary. Exits 0 when every download succeeded, "
        f"{EXIT_PARTIAL} when some failed (the others are stored), 1 on unusable options."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", type=int, help="Parallel downloads (default: settings).")
        parser.add_argument("--retries", type=int, help="Retries on 429/5xx/connection errors.")
        parser.add_argument("--timeout", type=float, help="Connect/read timeout in seconds.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--force", action="store_true", help="Re-download every image.")
        mode.add_argument(
            "--only-failed", action="store_true", help="Retry only articles that failed."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = images_download(
                workers=options["workers"],
                retries=options["retries"],
                timeout=options["timeout"],
                force=options["force"],
                only_failed=options["only_failed"],
                progress=options["verbosity"] > 0,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(summary))
        for article_id, error in summary.failures[:FAILURES_SHOWN]:
            self.stdout.write(f"  failed {article_id}: {error}")
        if len(summary.failures) > FAILURES_SHOWN:
            self.stdout.write(f"  ... and {len(summary.failures) - FAILURES_SHOWN} more")
        if summary.not_retried:
            self.stdout.write(
                f"{summary.not_retried} previously failed not retried (use --only-failed)."
            )
        if summary.failed:
            raise CommandError(
                f"{summary.failed} download(s) failed; the other images are stored",
                returncode=EXIT_PARTIAL,
            )
