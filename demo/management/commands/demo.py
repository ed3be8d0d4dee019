"""manage.py demo: run the whole pipeline on a generated catalog and print an example query."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from demo.services import DemoRefused, demo_run
from similarity.selectors.search import similar_to_article


class Command(BaseCommand):
    help = "Generate a demo catalog, serve it on 127.0.0.1, download, embed, index and query it."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--products", type=int, default=60)
        parser.add_argument("--model", help="Embedder to try first (default: LOOKALIKE_MODEL).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            demo_run(out=self.stdout.write, products=options["products"], model=options["model"])
        except DemoRefused as exc:
            raise CommandError(str(exc)) from exc
        result = similar_to_article(article_id="P0000", k=5)
        self.stdout.write(f"\nArticles most similar to P0000 (model {result.model}):")
        for row in result.results:
            self.stdout.write(
                f"  {row.article_id:<10} {row.title:<32} distance {row.distance:.4f}"
            )
        self.stdout.write(
            "\nNext: .venv/bin/python manage.py createsuperuser, then `make serve` and open "
            "http://127.0.0.1:8000/admin/"
        )
