"""manage.py find_duplicates: groups of near-identical articles (range search + union-find)."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from catalog.management.base import LookalikeCommand
from similarity.engine.files import atomic_text_file
from similarity.errors import SimilarityError
from similarity.selectors.duplicates import duplicate_groups_find, validate_threshold


class Command(LookalikeCommand):
    help = (
        "List groups of articles whose photos are closer than --threshold (cosine distance; "
        "default: DUPLICATE_THRESHOLD for the index's model), largest group first."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--threshold", help="Cosine distance, e.g. 0.05.")
        parser.add_argument("--output", help="Write the groups as JSON Lines to this file.")
        parser.add_argument("--include-reviewed", action="store_true",
                            help="Also list groups a reviewer has fully decided.")

    def handle(self, *args: Any, **options: Any) -> None:
        output = options["output"]
        try:
            threshold = (
                None if options["threshold"] is None else validate_threshold(options["threshold"])
            )
            if output and not Path(output).resolve().parent.is_dir():
                raise CommandError(f"--output directory does not exist: {Path(output).parent}")
            report = duplicate_groups_find(
                threshold=threshold, include_reviewed=options["include_reviewed"]
            )
        except SimilarityError as exc:
            raise CommandError(str(exc)) from exc
        if output:
            with atomic_text_file(output) as out:
                for group in report.groups:
                    record = {"size": len(group.members), "max_distance": group.max_distance,
                              "representative": group.representative,
                              "articles": group.article_ids,
                              "pairs": [asdict(pair) for pair in group.pairs]}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            for number, group in enumerate(report.groups, start=1):
                self.stdout.write(
                    f"Group {number} ({len(group.members)} articles, max distance "
                    f"{group.max_distance:.4f}): {', '.join(group.article_ids)}"
                )
        in_groups = sum(len(group.members) for group in report.groups)
        self.stderr.write(
            f"{len(report.groups)} groups, {in_groups} articles, {report.pair_count} pairs below "
            f"{report.threshold} (build {report.build_name}, {report.model}); "
            f"{report.hidden_pairs} reviewed pairs hidden"
        )
