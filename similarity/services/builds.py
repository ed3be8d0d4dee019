"""Index builds: download + embed + index as one recorded, single-flight run.

The lock, heartbeat, progress and reaping live in ``build_lock``; the steps of a run in
``build_steps``. Here: which model a build uses, queuing (at most one queued rebuild;
further requests join it), running a build and the periodic check.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.errors import BuildTakenOver
from similarity.models import IndexBuild
from similarity.services.build_lock import (
    BuildTracker,
    Heartbeat,
    Reaped,
    build_claim,
    build_start,
    running_builds_reap,
    this_process,
)
from similarity.services.build_steps import (
    MSG_NOTHING_TO_INDEX,
    BuildFailed,
    BuildRun,
    build_steps_run,
    embedder_load,
    select_build_runtime,
)
from similarity.services.distributed import (
    FINISH_STEPS,
    PHASE_FINISHING,
    PLAN_STEPS,
    distributed_build_wait,
    distributed_builds_watch,
    finish_options,
)
from similarity.services.embeddings import embeddings_update

logger = logging.getLogger(__name__)

__all__ = [
    "MSG_NOTHING_TO_INDEX",
    "BuildFailed",
    "build_model_choose",
    "builds_reap",
    "embeddings_run",
    "index_build_create",
    "index_build_enqueue",
    "index_build_finish",
    "index_build_run",
    "select_build_runtime",
]

ENQUEUE_ATTEMPTS = 5  # create-or-join races lost in a row before giving up (never in practice)


def build_model_choose(*, requested: str | None) -> tuple[str, str]:
    """The model a build uses and why: (model, IndexBuild.ModelSource value).

    An explicit request (``--model``) wins, then the LOOKALIKE_MODEL setting when it is set,
    then the current index's model (so a rebuild never switches model by itself, e.g. back
    to CLIP after a fallback to classic), then the default.
    """
    from similarity.engine.index import current_build

    Source = IndexBuild.ModelSource
    if requested:
        return requested, Source.EXPLICIT
    conf = similarity_settings()
    if conf.model_explicit:
        return conf.model, Source.SETTING
    current = current_build(conf.index_root)
    if current is not None and current.manifest.get("model"):
        return str(current.manifest["model"]), Source.CURRENT
    return conf.model, Source.DEFAULT


def _build_fields(
    *, model: str | None, index_type: str | None, full: bool, download: bool, trigger: str
) -> dict[str, Any]:
    chosen, source = build_model_choose(requested=model)
    return {
        "model": chosen,
        "model_source": source,
        "index_type": index_type or similarity_settings().index_type,
        "full": full,
        "download": download,
        "trigger": trigger,
    }


def index_build_create(
    *,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = False,
    trigger: str = "shell",
) -> IndexBuild:
    """Record a queued build with its options (model: see build_model_choose).

    IntegrityError when a build is already queued (at most one; index_build_enqueue joins it).
    """
    return IndexBuild.objects.create(
        **_build_fields(
            model=model, index_type=index_type, full=full, download=download, trigger=trigger
        )
    )


@dataclass(frozen=True)
class BuildRequest:
    """A rebuild request's answer: the queued build, and whether it joined one already queued."""

    build: IndexBuild
    joined: bool


def index_build_enqueue(
    *,
    model: str | None = None,
    index_type: str | None = None,
    full: bool = False,
    download: bool = True,
    trigger: str = "api",
) -> BuildRequest:
    """Queue a background build (django-q2) once the surrounding transaction commits.

    At most one build is queued (a database constraint): a request while one is queued joins
    it, widening its options (``full``/``download`` when asked) and gets its id.
    """
    running_builds_reap()
    for _attempt in range(ENQUEUE_ATTEMPTS):
        queued = IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).first()
        if queued is not None:
            if _join(queued, full=full, download=download):
                queued.refresh_from_db()
                return BuildRequest(queued, joined=True)
            continue  # it started meanwhile: queue a new one
        try:
            with transaction.atomic():
                build = index_build_create(
                    model=model, index_type=index_type, full=full, download=download,
                    trigger=trigger,
                )
        except IntegrityError:
            continue  # another request queued one meanwhile: join it
        transaction.on_commit(functools.partial(_send_task, build))
        return BuildRequest(build, joined=False)
    raise RuntimeError(f"could not queue or join a build after {ENQUEUE_ATTEMPTS} attempts")


def _join(queued: IndexBuild, *, full: bool, download: bool) -> bool:
    """Widen the queued build's options; False when it is no longer queued."""
    return bool(
        IndexBuild.objects.filter(pk=queued.pk, status=IndexBuild.Status.QUEUED).update(
            full=Case(When(full=True, then=Value(True)), default=Value(full)),
            download=Case(When(download=True, then=Value(True)), default=Value(download)),
        )
    )


def _send_task(build: IndexBuild) -> None:
    from django_q.tasks import async_task

    task_id = async_task(
        "similarity.tasks.index_build_task", build.pk, task_name=f"index-build-{build.pk}"
    )
    # By pk alone: with sync tasks (tests) the build has already run by now.
    IndexBuild.objects.filter(pk=build.pk).update(task_id=str(task_id or ""))


@dataclass
class ReapReport:
    reaped: list[Reaped] = field(default_factory=list)
    requeued: int | None = None  # id of a queued build handed to a worker again
    resent: int = 0  # shard tasks of distributed builds sent again (expired leases)

    def __str__(self) -> str:
        lines = [f"build #{r.build_id} marked failed ({r.reason}): {r.error}" for r in self.reaped]
        if self.resent:
            lines.append(f"{self.resent} shard task(s) of distributed builds sent again")
        if self.requeued is not None:
            lines.append(f"queued build #{self.requeued} handed to a worker again")
        return "\n".join(lines) or "nothing to do: no dead, hung or waiting build"


def builds_reap() -> ReapReport:
    """The periodic check: fail dead and hung builds; restart a queued build left waiting.

    A queued build is handed to a worker again when no build runs and its task has ended
    without running it (it found another build running) or, after the stale time, it never
    reached the task queue.
    """
    report = ReapReport(reaped=running_builds_reap())
    report.resent = distributed_builds_watch()
    if IndexBuild.objects.filter(status=IndexBuild.Status.RUNNING).exists():
        return report
    queued = IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).first()
    if queued is not None and _waiting(queued):
        _send_task(queued)
        report.requeued = queued.pk
    return report


def _waiting(build: IndexBuild) -> bool:
    if not build.task_id:
        age = (timezone.now() - build.created_at).total_seconds()
        return age > similarity_settings().build_stale_seconds
    from django_q.models import Task

    return Task.objects.filter(id=build.task_id).exists()


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
    the RUNTIME setting) is the embedding runtime; see ``select_build_runtime``.

    ``distributed`` (default: the DISTRIBUTED_BUILDS setting) fans the downloads and
    embeddings out as shard tasks over the django-q2 cluster (services.distributed); the
    build then ends in the worker that finishes it. ``wait`` (the shell) waits for that end,
    re-sending the tasks of shards whose worker died; without it (a task) this returns the
    running build at once.
    """
    if build is None:
        build = build_start(
            **_build_fields(
                model=model, index_type=index_type, full=full, download=download,
                trigger=trigger,
            )
        )
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
        return _recorded_run(run, steps=None)  # build_steps.STEPS
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
    run: BuildRun, *, steps: Any, done_phase: str | None = "done", finish: bool = True
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
) -> Any:
    """Embed missing images without building an index (no build lock): one of several workers.

    Each worker takes the articles of its ``shard``; a later ``build_index`` reuses every
    stored vector. Returns the EmbedSummary.
    """
    conf = similarity_settings()
    threads = fork_safe_threads(conf.threads)
    mark_openmp_used()
    embedder = embedder_load(model=build_model_choose(requested=model)[0], threads=threads)
    embedder, _choice = select_build_runtime(embedder, runtime, threads=threads)
    return embeddings_update(
        embedder=embedder,
        batch_size=batch_size or conf.batch_size,
        decode_workers=conf.decode_workers,
        progress=progress,
        shard=shard,
    )
