"""lookalike-client match SOURCE --server URL --token T --output report.csv"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lookalike_core.match_report import ReportError
from lookalike_core.sources import MatchSourceError

from lookalike_client.match import match_photos
from lookalike_client.server import ClientError

EXIT_ROWS_FAILED = 2  # manage.py match_images's: the report is complete but rows failed
ERRORS_SHOWN = 20


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="lookalike-client", description=(
        "Match supplier photos against a Lookalike catalog; photos are embedded on this "
        "machine and only their vectors are sent."))
    commands = main.add_subparsers(dest="command", required=True)
    match = commands.add_parser("match", help="Match a folder of photos or a CSV / JSON Lines "
                                "feed (supplier_ref, image_url); write a report.")
    match.add_argument("source", help="A folder of photos, or a .csv / .jsonl feed.")
    match.add_argument("--server", required=True, help="The shop's Lookalike URL.")
    match.add_argument("--token", default=os.environ.get("LOOKALIKE_TOKEN"),
                       help="API token (default: $LOOKALIKE_TOKEN).")
    match.add_argument("--output", help="Report, .csv or .jsonl (default: "
                       "<source name>-matches.csv); an existing one is resumed.")
    match.add_argument("--k", type=int, default=5, help="Nearest articles per photo.")
    match.add_argument("--batch-size", type=int, default=64, help="Photos per batch.")
    match.add_argument("--workers", type=int, default=4, help="Decoding threads.")
    match.add_argument("--threads", type=int, help="Model threads (default: all cores).")
    match.add_argument("--cache-dir", type=Path, help="Model cache (default: "
                       "$LOOKALIKE_CLIENT_CACHE or ~/.cache/lookalike-client).")
    match.add_argument("--verify", action="store_true", help="Upload the photos whose verdict "
                       "is 'similar' for the server to check (never done by default).")
    match.add_argument("--no-progress", action="store_true", help="No progress bar.")
    return main


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        summary = match_photos(
            options.source, server=options.server, token=options.token,
            output=options.output, k=options.k, batch_size=options.batch_size,
            workers=options.workers, threads=options.threads, cache_dir=options.cache_dir,
            verify=options.verify, progress=not options.no_progress,
        )
    except (ClientError, MatchSourceError, ReportError, ValueError) as error:
        print(f"lookalike-client: error: {error}", file=sys.stderr)
        return 1
    for ref, reason in summary.errors[:ERRORS_SHOWN]:
        print(f"{ref}: {reason}", file=sys.stderr)
    if summary.failed > ERRORS_SHOWN:
        print(f"... and {summary.failed - ERRORS_SHOWN} more (see the report)", file=sys.stderr)
    print(summary.describe())
    return EXIT_ROWS_FAILED if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
