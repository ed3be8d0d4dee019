"""manage.py demo_evalset: write or import the labelled evaluation catalog (generated)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from catalog.management.base import LookalikeCommand
from demo.evalset import evalset_import, evalset_write


class Command(LookalikeCommand):
    help = (
        "--write DIR writes the labelled demo catalog (images, catalog.csv, labels.csv); "
        "--import DIR imports it with its images stored (then run build_index and evaluate)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--write", metavar="DIR", help="Write the evaluation catalog.")
        action.add_argument("--import", dest="import_dir", metavar="DIR",
                            help="Import DIR's catalog with its images stored.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["write"]:
            files = evalset_write(options["write"])
            self.stdout.write(f"{files.articles} articles in {files.groups} groups: "
                              f"{files.catalog}, {files.labels}")
            return
        try:
            count = evalset_import(options["import_dir"])
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{count} articles imported with their images; now build_index")
