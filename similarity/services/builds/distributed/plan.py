"""Distributed builds: plan shards, run them in django-q2 workers, hand over to the finish.

The build holds the usual lock (one running ``IndexBuild``) from start to end, but no
process waits on it: the starter plans the shards and enqueues one task per shard; workers
claim shards under a lease (``distributed.shards``) and, when they finish one, steal any other
claimable shard of the same build and kind; the worker that closes the last shard of a stage
opens the next one (download -> embed) or enqueues the finishing task (collect, index,
publish: ``builds.steps``) on the default cluster. No worker slot is held while shards run
elsewhere, and a cluster with a single worker still completes the build.

The build's ``phase`` is the stage (``download shards``, ``embed shards``, ``finishing``);
moving it on is a guarded UPDATE in the transaction that creates the next stage's shards,
so exactly one worker moves it and nobody sees a stage without its shards. Shard workers
write the build's heartbeat and progress with every lease renewal, so the reaper judges a
distributed build like any other (the worker side: ``distributed.worker``). Lost tasks
(the Redis broker has no delivery receipts) are re-sent by ``build_shards_watch``: from the
waiting ``build_index --distributed`` and from the reaper schedule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from catalog.models import Article
from similarity.conf import similarity_settings
from similarity.models import BuildShard, Embedding, IndexBuild
from similarity.services.builds.distributed.shards import (
    shard_counts,
    shard_enqueued,
    shard_totals,
    shards_needing_a_task,
    shards_plan,
)
from similarity.services.builds.steps import (
    BuildRun,
    step_choose_runtime,
    step_collect,
    step_index,
    step_load_model,
    step_local_features,
    step_neighbors,
)
from similarity.services.indexing.embeddings import indexable_articles

logger = logging.getLogger(__name__)


def shard_size_for(*, articles: int, workers: int, cap: int) -> int:
    """Articles per shard: a small catalog still fans out to the ``workers`` there are (one
    shard each), a large one goes in shards of at most ``cap`` (SHARD_SIZE)."""
    if cap < 1:
        raise ValueError(f"shard size must be >= 1; got {cap}")
    return max(1, min(cap, -(-articles // max(1, workers))))


def live_workers() -> int:
    """Worker processes of the django-q2 clusters alive now (their broker stats); 0 if none."""
    from django_q.status import Stat

    try:
        return sum(len(stat.workers) for stat in Stat.get_all())
    except Exception as error:  # the broker is down: plan as for one worker
        logger.warning("Could not count the live django-q2 workers: %s", error)
        return 0


def _shard_size(articles: int) -> int:
    size = shard_size_for(articles=articles, workers=live_workers(),
                          cap=similarity_settings().shard_size)
    logger.info("Distributed build: %d articles in shards of %d", articles, size)
    return size

PHASE_PLAN = "plan shards"
PHASE_DOWNLOAD = "download shards"
PHASE_EMBED = "embed shards"
PHASE_FINISHING = "finishing"
SHARD_TASK = "similarity.tasks.build_shard_task"
FINISH_TASK = "similarity.tasks.build_finish_task"
WAIT_POLL_SECONDS = 2.0

Kind = BuildShard.Kind


# -- the starter: plan the first stage ---------------------------------------------------


def step_plan(run: BuildRun) -> None:
    """Plan the first stage (downloads when asked, else embeddings) and send its tasks."""
    build = run.build
    options = {
        "runtime": run.runtime,
        "batch_size": run.batch_size,
        "identity": run.loaded().identity(),
    }
    IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.RUNNING).update(
        timings=run.timings
    )
    if build.download:
        pending = Article.objects.filter(
            is_active=True, download_status=Article.DownloadStatus.PENDING
        ).values_list("pk", flat=True)
        shards = _stage_open(
            build.pk, PHASE_PLAN, PHASE_DOWNLOAD,
            lambda: shards_plan(build=build, kind=Kind.DOWNLOAD, pks=list(pending),
                                size=_shard_size(len(pending)), options=options),
        )
        if shards:
            _send_shards(shards)
            return
        from_phase = PHASE_DOWNLOAD
    else:
        from_phase = PHASE_PLAN
    _open_embed_stage(build, from_phase=from_phase, options=options, reembed=run.reembed)


PLAN_STEPS = (
    ("load model", step_load_model),
    ("choose runtime", step_choose_runtime),
    (PHASE_PLAN, step_plan),
)


def _stage_open(
    build_id: int, from_phase: str, to_phase: str, plan: Callable[[], list[BuildShard]]
) -> list[BuildShard] | None:
    """Move the build to ``to_phase`` and create its shards in one transaction.

    None when another process moved it first (or the build no longer runs).
    """
    with transaction.atomic():
        moved = IndexBuild.objects.filter(
            pk=build_id, status=IndexBuild.Status.RUNNING, phase=from_phase
        ).update(phase=to_phase, progress_at=timezone.now())
        if not moved:
            return None
        return plan()


def _open_embed_stage(
    build: IndexBuild, *, from_phase: str, options: dict[str, Any], reembed: bool
) -> None:
    def plan() -> list[BuildShard]:
        articles = indexable_articles()
        if not reembed:
            stored = Embedding.objects.filter(
                model=options["identity"], article_id=OuterRef("pk"),
                image_sha256=OuterRef("image_sha256"),
            )
            articles = articles.exclude(Exists(stored))
        pks = list(articles.values_list("pk", flat=True))
        return shards_plan(
            build=build, kind=Kind.EMBED, pks=pks,
            size=_shard_size(len(pks)), options=options, reembed=reembed,
        )

    shards = _stage_open(build.pk, from_phase, PHASE_EMBED, plan)
    if shards is None:
        return
    if shards:
        _send_shards(shards)
    else:
        _open_finishing(build.pk)


def _open_finishing(build_id: int) -> None:
    if _stage_open(build_id, PHASE_EMBED, PHASE_FINISHING, list) is not None:
        _send_finish(build_id)


def _default_queue() -> str:
    """The default cluster's queue, named explicitly: in a worker of a named cluster (the
    embed one) django-q2's default is that worker's own queue."""
    return similarity_settings().task_queue


def _send_shards(shards: Sequence[BuildShard]) -> None:
    from django_q.tasks import async_task

    embed_queue = similarity_settings().embed_cluster or _default_queue()
    for shard in shards:
        shard_enqueued(shard_ids=[shard.pk])  # before: a sync (inline) task may finish it
        async_task(
            SHARD_TASK, shard.pk, task_name=f"build-{shard.build_id}-shard-{shard.pk}",
            cluster=embed_queue if shard.kind == Kind.EMBED else _default_queue(),
        )


def _send_finish(build_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        FINISH_TASK, build_id, task_name=f"build-{build_id}-finish", cluster=_default_queue()
    )


def build_shards_advance(*, build_id: int) -> None:
    """After a shard closes: open the next stage once every shard of this one is done."""
    build = IndexBuild.objects.filter(pk=build_id, status=IndexBuild.Status.RUNNING).first()
    if build is None:
        return
    open_download = shard_counts(build_id=build_id, kind=Kind.DOWNLOAD).open
    if build.phase == PHASE_DOWNLOAD and not open_download:
        first = BuildShard.objects.filter(build_id=build_id).order_by("pk").first()
        _open_embed_stage(
            build, from_phase=PHASE_DOWNLOAD, options=first.options if first else {},
            reembed=bool(first and first.reembed),
        )
    elif build.phase == PHASE_EMBED and not shard_counts(build_id=build_id, kind=Kind.EMBED).open:
        _open_finishing(build_id)


def build_shards_watch(*, build_id: int) -> int:
    """Re-send tasks for shards whose task may be lost (expired leases); returns how many."""
    if not IndexBuild.objects.filter(pk=build_id, status=IndexBuild.Status.RUNNING).exists():
        return 0
    lost = shards_needing_a_task(build_id=build_id)
    if lost:
        logger.warning(
            "Build #%s: sending tasks again for %d shard(s) with an expired lease or no "
            "worker: %s", build_id, len(lost), ", ".join(f"#{shard.pk}" for shard in lost),
        )
        _send_shards(lost)
    return len(lost)


def distributed_builds_watch() -> int:
    """The reaper schedule's part: watch every running build that has shards."""
    running = IndexBuild.objects.filter(
        status=IndexBuild.Status.RUNNING, phase__in=[PHASE_DOWNLOAD, PHASE_EMBED]
    ).values_list("pk", flat=True)
    return sum(build_shards_watch(build_id=pk) for pk in running)


def distributed_build_wait(
    *,
    build_id: int,
    poll_seconds: float = WAIT_POLL_SECONDS,
    stop: threading.Event | None = None,
) -> IndexBuild:
    """Wait (``build_index --distributed``) until the build ends, re-sending lost tasks."""
    stop = stop or threading.Event()
    while True:
        build = IndexBuild.objects.get(pk=build_id)
        if build.status != IndexBuild.Status.RUNNING:
            return build
        build_shards_watch(build_id=build_id)
        if stop.wait(poll_seconds):
            return IndexBuild.objects.get(pk=build_id)


# -- the finish: collect, index, publish -------------------------------------------------


def step_gather(run: BuildRun) -> None:
    """Shard counts and timings onto the build; the devices that embedded into the manifest."""
    build = run.build
    embed = shard_totals(build_id=build.pk, kind=Kind.EMBED)
    build.embedded_count = embed["done"]
    build.reused_count = embed["reused"]
    build.failed_count = embed["failed"]
    shards = list(BuildShard.objects.filter(build_id=build.pk).order_by("kind", "first_pk"))
    build.failures = [
        failure for shard in shards if shard.kind == Kind.EMBED for failure in shard.failures
    ][:1000]
    devices = sorted({shard.device for shard in shards if shard.device})
    if devices:
        run.device = ",".join(devices)
    workers = sorted({shard.worker for shard in shards if shard.worker})
    summary = {
        "shards": len(shards),
        "attempts": sum(shard.attempts for shard in shards),
        "workers": workers,
        "shard_seconds": round(sum(shard.timings.get("seconds", 0.0) for shard in shards), 3),
    }
    if build.started_at:
        summary["wall_seconds"] = round((timezone.now() - build.started_at).total_seconds(), 3)
    run.timings["distributed"] = summary
    run.extra_manifest["distributed"] = {"shards": len(shards), "workers": len(workers)}
    if build.download:
        downloads = shard_totals(build_id=build.pk, kind=Kind.DOWNLOAD)
        run.timings["distributed"]["downloaded"] = downloads["done"]


FINISH_STEPS = (
    ("load model", step_load_model),
    ("choose runtime", step_choose_runtime),
    ("gather shards", step_gather),
    ("local features", step_local_features),
    ("collect", step_collect),
    ("index", step_index),
    ("neighbors", step_neighbors),
)


def finish_options(*, build_id: int) -> dict[str, Any]:
    """The options the starter recorded on the shards (runtime, batch size)."""
    first = BuildShard.objects.filter(build_id=build_id).order_by("pk").first()
    return first.options if first else {}
