"""The steps of an index build, in order: each timed, each reported to the build's tracker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from catalog.progress import progress_listener
from similarity.conf import similarity_settings
from similarity.embedders import ProvidedEmbedder, embedder_for
from similarity.engine.embedders import Embedder, EmbedderLoadError
from similarity.engine.embedders.runtimes import RuntimeChoice
from similarity.engine.embedders.wrapped import REFERENCE
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.engine.timing import Timeit
from similarity.errors import BuildFailed
from similarity.models import IndexBuild
from similarity.services.builds.lock import BuildTracker
from similarity.services.indexing.embeddings import embeddings_update
from similarity.services.indexing.update import IndexInputs, collect_inputs, index_update

logger = logging.getLogger(__name__)

MSG_NOTHING_TO_INDEX = (
    "nothing to index: no active article has a downloaded, decodable image "
    "(run manage.py download_images first)"
)


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
    embedder: Embedder | None = None  # "load model", then on its runtime
    runtime_choice: RuntimeChoice | None = None  # "choose runtime"
    inputs: IndexInputs | None = None  # "collect"
    model_fallback: str = ""  # the warning when the default model could not be loaded
    extra_manifest: dict[str, Any] = field(default_factory=dict)  # e.g. distributed shards

    def loaded(self) -> Embedder:
        """The embedder of the "load model" step; RuntimeError in a step running before it."""
        if self.embedder is None:
            raise RuntimeError(f"build #{self.build.pk}: no model loaded before this step")
        return self.embedder


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
            run.embedder = _provided(model, runtime=REFERENCE, device=run.device).embedder


def _load_default_model(run: BuildRun) -> None:
    """The default model, else efficientnet-lite0, else classic (loudly, recorded).

    Only a build that nobody chose a model for falls back: the model it lands on becomes
    the current index's, so later rebuilds keep it (``build_model_choose``).
    """
    from similarity.services.builds.model_choice import embedder_load_with_fallback

    try:
        choice = embedder_load_with_fallback(spec=run.build.model, device=run.device)
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
        provided = _provided(run.build.model, runtime=run.runtime, device=run.device)
    run.embedder, run.runtime_choice = provided.embedder, provided.runtime


def step_embed(run: BuildRun) -> None:
    conf = similarity_settings()
    with Timeit("Embedding new and changed images", into=run.timings, key="embed_seconds"):
        embedded = embeddings_update(
            embedder=run.loaded(),
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


def step_local_features(run: BuildRun) -> None:
    """Catalog images' local features for verification (VERIFY), stored by image content:
    only images never seen before are computed."""
    conf = similarity_settings()
    if not conf.verify:
        return
    from similarity.services.indexing.local_features import local_features_update

    with Timeit("Local features of new images", into=run.timings,
                key="local_features_seconds"):
        outcome = local_features_update(workers=conf.decode_workers, progress=run.progress)
    run.timings["local_features"] = {"computed": outcome.computed, "reused": outcome.reused,
                                     "failed": len(outcome.failed)}


def step_collect(run: BuildRun) -> None:
    with Timeit("Collecting vectors", into=run.timings, key="collect_seconds"):
        run.inputs = collect_inputs(run.loaded().identity())
    if not len(run.inputs.ids):
        raise BuildFailed(MSG_NOTHING_TO_INDEX)


def step_index(run: BuildRun) -> None:
    build, embedder, inputs, choice = run.build, run.loaded(), run.inputs, run.runtime_choice
    if inputs is None or choice is None:
        raise RuntimeError(f"build #{build.pk}: nothing collected or no runtime chosen")
    with Timeit("Updating the index", into=run.timings, key="index_update_seconds"):
        outcome = index_update(
            inputs=inputs,
            model=build.model,
            identity=embedder.identity(),
            index_type=build.index_type,
            full=build.full,
            extra_manifest={
                "build_id": build.pk,
                "supports_text": embedder.supports_text,
                "device": run.device,
                **({"model_fallback": run.model_fallback} if run.model_fallback else {}),
                **choice.as_manifest(),
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


def step_neighbors(run: BuildRun) -> None:
    """Refresh stored neighbors (SimilarArticle; STORE_NEIGHBORS); it times itself."""
    from similarity.services.indexing.neighbors import neighbors_refresh_after_build

    neighbors_refresh_after_build(build=run.build, timings=run.timings, progress=run.progress)


Steps = tuple[tuple[str, Callable[[BuildRun], None]], ...]

STEPS: Steps = (
    ("download", step_download),
    ("load model", step_load_model),
    ("choose runtime", step_choose_runtime),
    ("embed", step_embed),
    ("local features", step_local_features),
    ("collect", step_collect),
    ("index", step_index),
    ("neighbors", step_neighbors),
)


def build_steps_run(
    *,
    run: BuildRun,
    steps: Steps | None = None,
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


def _provided(model: str, *, runtime: str | None, device: str) -> ProvidedEmbedder:
    """``model`` on ``runtime`` (default: the RUNTIME setting) from the process's provider.

    A model, device or explicit runtime that cannot be used here (e.g. cuda on a machine
    without it, a runtime that fails the accuracy gate) fails the build in one line; ``auto``
    falls back instead. The runtime does not change the model identity: vectors from
    runtimes that passed the gate may share one index.
    """
    try:
        return embedder_for(model, runtime=runtime, device=device)
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc
