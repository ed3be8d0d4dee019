"""Running an index build: download + embed + index as one recorded, single-flight run.

The lock, heartbeat, progress and reaping live in ``builds.lock``; the steps of a run in
``builds.steps``; queuing in ``builds.queue``; the model in ``builds.model_choice``. Here: a
build run in this process (or planned as shards: ``builds.distributed``), its end and its
record, and embedding without a build.
"""

from __future__ import annotations

import logging
import time

from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.embedders import embedder_for
from similarity.engine.embedders import EmbedderLoadError
from similarity.errors import BuildFailed, BuildTakenOver
from similarity.models import IndexBuild
from similarity.services.builds.distributed.plan import (
    FINISH_STEPS,
    PHASE_FINISHING,
    PLAN_STEPS,
    distributed_build_wait,
    finish_options,
)
from similarity.services.builds.lock import (
    BuildTracker,
    Heartbeat,
    build_claim,
    build_start,
    this_process,
)
from similarity.services.builds.model_choice import build_fields, build_model_choose
from similarity.services.builds.steps import BuildRun, Steps, build_steps_run
from similarity.services.indexing.embeddings import EmbedSummary, embeddings_update

logger = logging.getLogger(__name__)

# What a finished build writes back; never task_id (set by the enqueuer) or the lock fields.
FINISH_FIELDS = (
    "status",
    "error",
    *IndexBuild.SUMMARY_FIELDS,
    "timings",
    "failures",
    "manifest",
    "finished_at",
)


def _finish(build: IndexBuild) -> None:
    """Write the outcome, unless another process declared this build abandoned meanwhile."""
    values = {name: getattr(build, name) for name in FINISH_FIELDS}
    updated = IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.RUNNING).update(
        **values
    )
    if not updated:
        logger.error(
            "Build #%s was marked %s by another process before it finished; keeping that",
            build.pk,
            IndexBuild.objects.filter(pk=build.pk).values_list("status", flat=True).first(),
        )
        build.refresh_from_db()


def index_build_run(
    *,
    build: IndexBuild | None = None,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = False,
    reembed: bool = False,
    batch_size: int | None = None,
    trigger: str = "shell",
    progress: bool = True,
    runtime: str | None = None,
    distributed: bool | None = None,
    wait: bool = True,
) -> IndexBuild:
    """Run a build: (download,) embed what is missing, update or rebuild the index, switch.

    Without ``build`` a new running build is recorded (BuildAlreadyRunning when another
    runs); with a queued ``build`` it is claimed (returned as it is when no longer queued).
    The new index becomes current only when it is completely written; any failure leaves
    the previous index serving and the build recorded as failed with its error. Same inputs
    as the current index: nothing is written (status "unchanged"). ``runtime`` (default:
    the RUNTIME setting) is the embedding runtime (``similarity.embedders``: gated, cached).

    ``distributed`` (default: the DISTRIBUTED_BUILDS setting) fans the downloads and
    embeddings out as shard tasks over the django-q2 cluster (builds.distributed); the
    build then ends in the worker that finishes it. ``wait`` (the shell) waits for that end,
    re-sending the tasks of shards whose worker died; without it (a task) this returns the
    running build at once.
    """
    if build is None:
        fields = build_fields(
            model=model, index_type=index_type, full=full, download=download, trigger=trigger
        )
        build = build_start(**fields)
    elif not build_claim(build=build):
        logger.warning("Build #%s is %s, not queued: not run", build.pk, build.status)
        return build
    run = BuildRun(
        build=build, tracker=BuildTracker(build.pk), reembed=reembed, batch_size=batch_size,
        progress=progress, runtime=runtime,
    )
    if distributed is None:
        distributed = similarity_settings().distributed_builds
    if not distributed:
        return _recorded_run(run, steps=None)  # steps.STEPS
    return _distributed_run(run, wait=wait)


def _distributed_run(run: BuildRun, *, wait: bool) -> IndexBuild:
    """Plan the shards and send their tasks; with ``wait``, wait for the workers' end."""
    build = run.build
    _recorded_run(run, steps=PLAN_STEPS, done_phase=None, finish=False)
    if wait:
        try:
            with Heartbeat(build.pk):
                return distributed_build_wait(build_id=build.pk)
        except KeyboardInterrupt:
            # Only the waiting stops: the workers carry the build to its end.
            logger.warning("Stopped waiting for build #%s; its workers go on", build.pk)
    build.refresh_from_db()
    return build


def index_build_finish(*, build_id: int) -> IndexBuild:
    """The end of a distributed build (a task sent by the worker that closed its last
    shard): gather the shards' counts, collect the vectors, index and publish."""
    build = IndexBuild.objects.get(pk=build_id)
    if build.status != IndexBuild.Status.RUNNING or build.phase != PHASE_FINISHING:
        logger.warning("Build #%s is %s (%s): nothing to finish", build.pk, build.status,
                       build.phase)
        return build
    IndexBuild.objects.filter(pk=build.pk).update(process=this_process())
    options = finish_options(build_id=build.pk)
    run = BuildRun(
        build=build, tracker=BuildTracker(build.pk), batch_size=options.get("batch_size"),
        progress=True, runtime=options.get("runtime"),
        timings=dict(build.timings or {}),
    )
    return _recorded_run(run, steps=FINISH_STEPS)


def _recorded_run(
    run: BuildRun, *, steps: Steps | None, done_phase: str | None = "done", finish: bool = True
) -> IndexBuild:
    """Run ``steps`` with a heartbeat; the outcome (or the failure) is written to the build.

    ``finish=False`` (a distributed build's planning) writes the outcome only on failure.
    """
    build = run.build
    started = time.perf_counter()
    failed = False
    try:
        with Heartbeat(build.pk):
            build_steps_run(run=run, steps=steps, done_phase=done_phase)
    except BaseException as exc:
        failed = True
        build.status = IndexBuild.Status.FAILED
        known = isinstance(exc, BuildFailed | BuildTakenOver)
        build.error = str(exc) if known else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, KeyboardInterrupt):
            build.error = "interrupted"
        raise
    finally:
        if finish or failed:
            run.timings["total_seconds"] = round(time.perf_counter() - started, 3)
            if "distributed" in run.timings and build.started_at:
                run.timings["total_seconds"] = round(
                    (timezone.now() - build.started_at).total_seconds(), 3
                )
            build.timings = run.timings
            build.finished_at = timezone.now()
            _finish(build)
    return build


def embeddings_run(
    *,
    model: str | None = None,
    runtime: str | None = None,
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> EmbedSummary:
    """Embed missing images without building an index (no build lock): one of several workers.

    Each worker takes the articles of its ``shard``; a later ``build_index`` reuses every
    stored vector.
    """
    conf = similarity_settings()
    try:
        provided = embedder_for(build_model_choose(requested=model)[0], runtime=runtime)
    except EmbedderLoadError as exc:
        raise BuildFailed(str(exc)) from exc
    return embeddings_update(
        embedder=provided.embedder,
        batch_size=batch_size or conf.batch_size,
        decode_workers=conf.decode_workers,
        progress=progress,
        shard=shard,
    )
