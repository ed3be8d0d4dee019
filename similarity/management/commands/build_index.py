"""manage.py build_index: embed what is missing and make the index current."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from catalog.exitcodes import EXIT_PARTIAL
from catalog.management.base import LookalikeCommand
from similarity.engine.embedders.runtimes import RUNTIME_CHOICES
from similarity.engine.embedders.specs import DEFAULT_MODEL
from similarity.errors import BuildAlreadyRunning, BuildFailed, BuildTakenOver
from similarity.models import IndexBuild
from similarity.services.builds.runs import index_build_run


class Command(LookalikeCommand):
    help = (
        "Embed new and changed images and build (or update) the similarity index. Exits 0 "
        f"when done, {EXIT_PARTIAL} when done but some images could not be embedded, 1 when "
        "the build failed or another build runs."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--model", help="Embedder: a sentence-transformers name or local "
                            "directory, transformers:<name-or-path>, or classic. Default: "
                            "LOOKALIKE_MODEL if set, else the current index's model, else "
                            f"{DEFAULT_MODEL}.")
        parser.add_argument("--index", dest="index_type", help="flat (exact, default), auto, "
                            "ivf, hnsw, or a Faiss factory string such as IVF1024,Flat.")
        parser.add_argument("--full", action="store_true",
                            help="Rebuild the index from scratch (stored embeddings are reused).")
        parser.add_argument("--reembed", action="store_true",
                            help="Discard this model's stored embeddings and embed everything.")
        parser.add_argument("--download", action="store_true",
                            help="Download pending images first.")
        parser.add_argument("--batch-size", type=int, help="Images per model batch.")
        parser.add_argument("--runtime", choices=RUNTIME_CHOICES,
                            help="Embedding runtime: torch (fp32 reference), "
                            "torch-bf16, onnx, onnx-int8, or auto (fastest that passes the "
                            "accuracy gate); default: the RUNTIME setting.")
        parser.add_argument("--distributed", action="store_true", default=None,
                            help="Fan the downloads and embeddings out as shard tasks over "
                            "the django-q2 cluster (start workers with manage.py qcluster) "
                            "and wait for the build to finish; default: the "
                            "DISTRIBUTED_BUILDS setting.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bars.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] is not None and options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be >= 1; got {options['batch_size']}")
        try:
            build = index_build_run(
                model=options["model"],
                index_type=options["index_type"],
                full=options["full"],
                reembed=options["reembed"],
                download=options["download"],
                batch_size=options["batch_size"],
                progress=not options["no_progress"],
                trigger="shell",
                runtime=options["runtime"],
                distributed=options["distributed"],
            )
        except (BuildFailed, BuildAlreadyRunning, BuildTakenOver, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if build.status == IndexBuild.Status.RUNNING:
            raise CommandError(
                f"stopped waiting: build #{build.pk} goes on in the django-q2 workers "
                "(follow it in the admin or GET /api/index/builds/<id>/)"
            )
        for failure in build.failures[:20]:
            self.stderr.write(f"skipped {failure['article_id']}: {failure['reason']}")
        self.stdout.write(f"{build.describe()} (model {build.model}: {build.model_source})")
        if build.runtime_summary():
            self.stdout.write(build.runtime_summary())
        if build.failed_count:
            raise CommandError(
                f"{build.failed_count} image(s) could not be embedded; the others are indexed",
                returncode=EXIT_PARTIAL,
            )
