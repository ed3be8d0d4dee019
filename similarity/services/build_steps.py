"""The steps of an index build, in order: each timed, each reported to the build's tracker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from catalog.progress import progress_listener
from similarity.conf import similarity_settings
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.engine.timing import Timeit
from similarity.models import IndexBuild
from similarity.services.build_lock import BuildTracker
from similarity.services.embeddings import embeddings_update
from similarity.services.indexing import collect_inputs, index_update

logger = logging.getLogger(__name__)

MSG_NOTHING_TO_INDEX = (
    "nothing to index: no active article has a downloaded, decodable image "
    "(run manage.py download_images first)"
)


class BuildFailed(Exception):
    """A build could not complete; the message is for the shop's engineer."""


@dataclass
class BuildRun:
    """What the steps share: the build record, its options and what earlier steps produced."""

    build: IndexBuild
    tracker: BuildTracker
    timings: dict[str, Any] = field(default_factory=dict)
    reembed: bool = False
    batch_size: int | None = None
    progress: bool = True
    runtime: str | None = None
    threads: int = 1
    device: str = "cpu"
    embedder: Any = None
    runtime_choice: Any = None
    inputs: Any = None
    model_fallback: str = ""  # the warning when the default model could not be loaded
    extra_manifest: dict[str, Any] = field(default_factory=dict)  # e.g. distributed shards


def step_download(run: BuildRun) -> None:
    if not run.build.download:
        return
    from catalog.services.downloads import images_download

    with Timeit("Downloading images", into=run.timings, key="download_seconds"):
        summary = images_download(progress=run.progress)
    logger.info("Download: %s", summary)


def step_load_model(run: BuildRun) -> None:
    from similarity.engine.index import set_faiss_threads

    run.threads = fork_safe_threads(similarity_settings().threads)
    set_faiss_threads(run.threads)
    mark_openmp_used()
    model = run.build.model
    run.device = similarity_settings().device
    with Timeit(f"Loading model {model}", into=run.timings, key="load_model_seconds"):
        if run.build.model_source == IndexBuild.ModelSource.DEFAULT:
            _load_default_model(run)
        else:  # asked for, set, or the current index's: it loads or the build fails
            run.embedder = embedder_load(model=model, threads=run.threads, device=run.device)


def _load_default_model(run: BuildRun) -> None:
    """The default model, else efficientnet-lite0, else classic (loudly, recorded).

    Only a build that nobody chose a model for falls back: the model it lands on becomes
    the current index's, so later rebuilds keep it (``build_model_choose``).
    """
    from similarity.engine.embedders import EmbedderLoadError, device_check
    from similarity.services.models import embedder_load_with_fallback

    try:
        choice = embedder_load_with_fallback(
            spec=run.build.model, threads=run.threads, device=device_check(run.device)
        )
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc
    run.embedder = choice.embedder
    if choice.fell_back:
        run.model_fallback = choice.warning()
        run.build.model = choice.spec
        run.build.model_source = IndexBuild.ModelSource.FALLBACK
        IndexBuild.objects.filter(pk=run.build.pk).update(
            model=choice.spec, model_source=IndexBuild.ModelSource.FALLBACK
        )


def step_choose_runtime(run: BuildRun) -> None:
    with Timeit("Choosing the embedding runtime", into=run.timings, key="runtime_seconds"):
        run.embedder, run.runtime_choice = select_build_runtime(
            run.embedder, run.runtime, threads=run.threads
        )


def step_embed(run: BuildRun) -> None:
    conf = similarity_settings()
    with Timeit("Embedding new and changed images", into=run.timings, key="embed_seconds"):
        embedded = embeddings_update(
            embedder=run.embedder,
            batch_size=run.batch_size or conf.batch_size,
            decode_workers=conf.decode_workers,
            reembed=run.reembed,
            progress=run.progress,
        )
    run.timings["embed"] = embedded.timings.as_dict()
    build = run.build
    build.embedded_count = embedded.embedded
    build.reused_count = embedded.reused
    build.failed_count = len(embedded.failures)
    build.failures = [
        {"article_id": article_id, "reason": reason}
        for article_id, reason in embedded.failures[:1000]
    ]


def step_collect(run: BuildRun) -> None:
    with Timeit("Collecting vectors", into=run.timings, key="collect_seconds"):
        run.inputs = collect_inputs(run.embedder.identity())
    if not len(run.inputs.ids):
        raise BuildFailed(MSG_NOTHING_TO_INDEX)


def step_index(run: BuildRun) -> None:
    build = run.build
    with Timeit("Updating the index", into=run.timings, key="index_update_seconds"):
        outcome = index_update(
            inputs=run.inputs,
            model=build.model,
            identity=run.embedder.identity(),
            index_type=build.index_type,
            full=build.full,
            extra_manifest={
                "build_id": build.pk,
                "supports_text": run.embedder.supports_text,
                "device": run.device,
                **({"model_fallback": run.model_fallback} if run.model_fallback else {}),
                **run.runtime_choice.as_manifest(),
                **run.extra_manifest,
            },
        )
    run.timings.update(outcome.timings)
    build.mode = outcome.mode
    build.build_name = outcome.build_name
    build.article_count = outcome.count
    build.added_count = outcome.added
    build.removed_count = outcome.removed
    build.recall_at_10 = outcome.recall_at_10
    build.manifest = outcome.manifest
    build.status = (
        IndexBuild.Status.UNCHANGED if outcome.mode == "unchanged" else IndexBuild.Status.SUCCEEDED
    )


def step_neighbours(run: BuildRun) -> None:
    """Refresh stored neighbours (SimilarArticle; STORE_NEIGHBORS); it times itself."""
    from similarity.services.neighbors import neighbors_refresh_after_build

    neighbors_refresh_after_build(build=run.build, timings=run.timings, progress=run.progress)


STEPS: tuple[tuple[str, Callable[[BuildRun], None]], ...] = (
    ("download", step_download),
    ("load model", step_load_model),
    ("choose runtime", step_choose_runtime),
    ("embed", step_embed),
    ("collect", step_collect),
    ("index", step_index),
    ("neighbours", step_neighbours),
)


def build_steps_run(
    *,
    run: BuildRun,
    steps: tuple[tuple[str, Callable[[BuildRun], None]], ...] | None = None,
    done_phase: str | None = "done",
) -> None:
    """Run every step; each start and every progress-bar update inside it counts as progress.

    The index becomes current inside ``index``; a build that lost its lock (declared dead or
    hung by another process) stops at the next step or batch with BuildTakenOver. A
    distributed build's planning steps end without ``done_phase`` (its shards go on).
    ``steps`` defaults to STEPS (read at call time).
    """
    for name, step in STEPS if steps is None else steps:
        run.tracker.step(name)
        with progress_listener(run.tracker.progressed):
            step(run)
    if done_phase is not None:
        run.tracker.step(done_phase)


def embedder_load(*, model: str, threads: int, device: str = "cpu") -> Any:
    """The embedder for ``model`` on ``device``; a model or device that cannot be used fails
    the build in one line (e.g. cuda asked for on a machine without it)."""
    from similarity.engine.embedders import EmbedderLoadError, device_check, load_embedder

    try:
        return load_embedder(model, threads=threads, device=device_check(device))
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc


def select_build_runtime(
    embedder: Any, runtime: str | None = None, *, threads: int | None = None
) -> tuple[Any, Any]:
    """``embedder`` on ``runtime`` (default: the RUNTIME setting) once it passes the gate.

    Calibration images are generated (``engine.embedders.calibration``), so the gate is
    deterministic for a model. BuildFailed when an explicit runtime is unavailable or
    disagrees with torch fp32; ``auto`` falls back instead. The runtime does not change the
    model identity: vectors from runtimes that passed the gate may share one index.
    """
    from similarity.engine.embedders import EmbedderLoadError
    from similarity.engine.embedders.calibration import calibration_images
    from similarity.engine.embedders.runtimes import REFERENCE, select_runtime, validate_runtime

    conf = similarity_settings()
    name = validate_runtime(runtime or conf.runtime)
    count = conf.runtime_calibration_images if name != REFERENCE else 0
    calibration = calibration_images(count)
    try:
        chosen, choice = select_runtime(
            embedder,
            name,
            calibration=calibration,
            cache_dir=conf.onnx_cache_dir,
            threads=threads,
            min_cosine=conf.runtime_min_cosine,
            min_overlap=conf.runtime_min_overlap,
        )
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc
    logger.info("Embedding runtime: %s (requested %s)", choice.runtime, choice.requested)
    return chosen, choice
