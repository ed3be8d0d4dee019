"""manage.py embed_images: embed missing images only, as one of several parallel workers."""

from __future__ import annotations

import re
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from catalog.exitcodes import EXIT_PARTIAL
from catalog.management.base import LookalikeCommand
from similarity.engine.embedders.runtimes import RUNTIME_CHOICES
from similarity.errors import BuildFailed
from similarity.services.builds.runs import embeddings_run


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n; None stays None."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise CommandError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4); got {value!r}")
    return int(match[1]), int(match[2])


class Command(LookalikeCommand):
    help = (
        "Embed the images that have no stored vector yet, without building the index. Run "
        "several with --shard 0/N .. N-1/N to share a large catalog, then build_index. "
        f"Exits 0 when done, {EXIT_PARTIAL} when some images could not be embedded, 1 on a "
        "failure."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--model", help="Embedder (default: what build_index would use).")
        parser.add_argument("--runtime", choices=RUNTIME_CHOICES,
                            help="Embedding runtime (default: the RUNTIME setting).")
        parser.add_argument("--batch-size", type=int, help="Images per model batch.")
        parser.add_argument("--shard", help="i/n: this worker's share of the articles.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        shard = parse_shard(options["shard"])
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be >= 1; got {options['batch_size']}")
        try:
            summary = embeddings_run(
                model=options["model"],
                runtime=options["runtime"],
                batch_size=options["batch_size"],
                shard=shard,
                progress=not options["no_progress"],
            )
        except (BuildFailed, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for article_id, reason in summary.failures[:20]:
            self.stderr.write(f"skipped {article_id}: {reason}")
        self.stdout.write(
            f"{summary.embedded} embedded, {summary.reused} already stored, "
            f"{len(summary.failures)} failed"
            + (f" (shard {shard[0]}/{shard[1]})" if shard else "")
        )
        if summary.failures:
            raise CommandError(
                f"{len(summary.failures)} image(s) could not be embedded; the others are stored",
                returncode=EXIT_PARTIAL,
            )
