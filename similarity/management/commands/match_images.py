"""manage.py match_images SOURCE: match supplier photos against the index, write a report."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError
from lookalike_core.sources import MatchSourceError

from catalog.exitcodes import EXIT_PARTIAL
from catalog.management.base import LookalikeCommand
from similarity.errors import IndexNotReady, InvalidQuery
from similarity.selectors.validation import validate_k
from similarity.services.matching.photos import supplier_photos_match

EXIT_ROWS_FAILED = EXIT_PARTIAL  # the report is complete but some rows failed
ERRORS_SHOWN = 20


class Command(LookalikeCommand):
    help = (
        "Match supplier photos (a folder, or a CSV / JSON Lines feed with supplier_ref and "
        "image_url) against the current index; write a report with a verdict per photo "
        "(same, similar, new, error) and its nearest articles. Re-running with the same "
        f"--output resumes. Exits {EXIT_ROWS_FAILED} when some rows failed, 1 when the "
        "source, the report or the index cannot be used."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("source", help="A folder of photos, or a .csv / .jsonl feed.")
        parser.add_argument("--output", help="Report file, .csv or .jsonl (default: "
                            "<source name>-matches.csv in the current directory).")
        parser.add_argument("--k", type=int, default=5, help="Nearest articles per photo.")
        parser.add_argument("--similar-threshold", type=float, help="Cosine distance at or "
                            "under which a photo is 'similar' (default: SIMILAR_THRESHOLD).")
        parser.add_argument("--batch-size", type=int, help="Photos per batch "
                            "(default: MATCH_BATCH_SIZE).")
        parser.add_argument("--workers", type=int, help="Parallel downloads.")
        parser.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                            help="Global ranking only: no local-feature verification (default: "
                            "the VERIFY setting, on).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            k = validate_k(options["k"])
        except InvalidQuery as exc:
            raise CommandError(f"--{exc}") from exc
        source = Path(options["source"])
        output = options["output"] or f"{source.stem or 'supplier'}-matches.csv"
        try:
            summary = supplier_photos_match(
                source=source,
                output=output,
                k=k,
                similar_threshold=options["similar_threshold"],
                verify=options["verify"],
                batch_size=options["batch_size"],
                workers=options["workers"],
                progress=not options["no_progress"] and options["verbosity"] > 0,
            )
        except (MatchSourceError, IndexNotReady, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for ref, error in summary.errors[:ERRORS_SHOWN]:
            self.stderr.write(f"{ref}: {error}")
        if summary.failed > ERRORS_SHOWN:
            self.stderr.write(f"... and {summary.failed - ERRORS_SHOWN} more (see the report)")
        self.stdout.write(summary.describe())
        if summary.failed:
            raise CommandError(
                f"{summary.failed} row(s) failed; the other rows were matched",
                returncode=EXIT_ROWS_FAILED,
            )
