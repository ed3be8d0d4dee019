"""Distributed builds: plan shards, run them in django-q2 workers, hand over to the finish.

The build holds the usual lock (one running ``IndexBuild``) from start to end, but no
process waits on it: the starter plans the shards and enqueues one task per shard; workers
claim shards under a lease (``services.shards``) and, when they finish one, steal any other
claimable shard of the same build and kind; the worker that closes the last shard of a stage
opens the next one (download -> embed) or enqueues the finishing task (collect, index,
publish: ``build_steps``) on the default cluster. No worker slot is held while shards run
elsewhere, and a cluster with a single worker still completes the build.

The build's ``phase`` is the stage (``download shards``, ``embed shards``, ``finishing``);
moving it on is a guarded UPDATE in the transaction that creates the next stage's shards,
so exactly one worker moves it and nobody sees a stage without its shards. Shard workers
write the build's heartbeat and progress with every lease renewal, so the reaper judges a
distributed build like any other. Lost tasks (the Redis broker has no delivery receipts)
are re-sent by ``build_shards_watch``: from the waiting ``build_index --distributed`` and
from the reaper schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from catalog.models import Article
from catalog.progress import progress_listener
from similarity.conf import similarity_settings
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.errors import BuildTakenOver
from similarity.models import BuildShard, Embedding, IndexBuild
from similarity.services.build_steps import (
    BuildFailed,
    BuildRun,
    embedder_load,
    select_build_runtime,
    step_choose_runtime,
    step_collect,
    step_index,
    step_load_model,
    step_neighbours,
)
from similarity.services.embeddings import embeddings_update, indexable_articles
from similarity.services.shards import (
    LeaseKeeper,
    ShardLost,
    ShardOutcome,
    shard_claim,
    shard_complete,
    shard_counts,
    shard_enqueued,
    shard_fail,
    shard_totals,
    shards_needing_a_task,
    shards_plan,
    worker_identity,
)

logger = logging.getLogger(__name__)

PHASE_PLAN = "plan shards"
PHASE_DOWNLOAD = "download shards"
PHASE_EMBED = "embed shards"
PHASE_FINISHING = "finishing"
SHARD_TASK = "similarity.tasks.build_shard_task"
FINISH_TASK = "similarity.tasks.build_finish_task"
WAIT_POLL_SECONDS = 2.0
MSG_SHARD_FAILED = "{kind} shard #{shard} (articles {first}-{last}) failed on {worker}: {error}"

Kind = BuildShard.Kind


# -- the starter: plan the first stage ---------------------------------------------------


def step_plan(run: BuildRun) -> None:
    """Plan the first stage (downloads when asked, else embeddings) and send its tasks."""
    build = run.build
    options = {
        "runtime": run.runtime,
        "batch_size": run.batch_size,
        "identity": run.embedder.identity(),
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
                                size=similarity_settings().shard_size, options=options),
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
    build_id: int, from_phase: str, to_phase: str, plan: Any
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
        return shards_plan(
            build=build, kind=Kind.EMBED, pks=list(articles.values_list("pk", flat=True)),
            size=similarity_settings().shard_size, options=options, reembed=reembed,
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
    from django.conf import settings

    return str(settings.Q_CLUSTER.get("name") or "default")


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
    *, build_id: int, poll_seconds: float = WAIT_POLL_SECONDS, stop: threading.Event | None = None
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


# -- workers: run shards -----------------------------------------------------------------


_embedders: dict[tuple[Any, ...], tuple[Any, str]] = {}
_embedders_lock = threading.Lock()


def _worker_embedder(*, model: str, options: dict[str, Any]) -> tuple[Any, str]:
    """(embedder on its gated runtime, device), loaded once per worker process."""
    conf = similarity_settings()
    threads = fork_safe_threads(conf.threads)
    key = (model, options.get("runtime"), conf.device, threads)
    with _embedders_lock:
        if key not in _embedders:
            mark_openmp_used()
            embedder = embedder_load(model=model, threads=threads, device=conf.device)
            embedder, _choice = select_build_runtime(embedder, options.get("runtime"),
                                                     threads=threads)
            _embedders[key] = (embedder, conf.device)
        return _embedders[key]


def build_shard_work(*, shard_id: int) -> str:
    """A shard task: claim this shard (or, once it is done or held, any other claimable
    shard of the same build and kind) and run shards until none is left to claim."""
    first = BuildShard.objects.select_related("build").filter(pk=shard_id).first()
    if first is None:
        return "no such shard"
    build, kind = first.build, first.kind
    device = ""
    if kind == Kind.EMBED:
        try:
            _embedder, device = _worker_embedder(model=build.model, options=first.options)
        except BuildFailed as exc:
            host, pid = worker_identity()
            _build_fail(build.pk, f"worker {host}:{pid} cannot embed: {exc}")
            return "failed"
    preferred: int | None = shard_id
    ran = 0
    stop_stealing = time.monotonic() + _task_timeout() / 2
    while IndexBuild.objects.filter(pk=build.pk, status=IndexBuild.Status.RUNNING).exists():
        if ran and time.monotonic() > stop_stealing:
            break  # leave the rest to their own tasks before django-q2's timeout kills this
        shard = shard_claim(build_id=build.pk, kind=kind, preferred=preferred, device=device)
        preferred = None
        if shard is None:
            break
        try:
            shard_complete(shard=shard, outcome=_shard_execute(shard, build=build))
        except ShardLost as exc:
            logger.warning("%s; moving on", exc)
            continue
        except BuildTakenOver:
            logger.warning("Build #%s no longer runs: shard #%s stops", build.pk, shard.pk)
            break
        except Exception as exc:
            error = MSG_SHARD_FAILED.format(
                kind=shard.kind, shard=shard.pk, first=shard.first_pk, last=shard.last_pk,
                worker=shard.worker, error=f"{type(exc).__name__}: {exc}",
            )
            logger.exception("%s", error)
            shard_fail(shard=shard, error=error)
            _build_fail(build.pk, error)
            return "failed"
        ran += 1
        build_shards_advance(build_id=build.pk)
    return f"{ran} shard(s) run"


def _task_timeout() -> float:
    from django.conf import settings

    return float(getattr(settings, "Q_CLUSTER", {}).get("timeout") or 3600)


def _shard_execute(shard: BuildShard, *, build: IndexBuild) -> ShardOutcome:
    keeper = LeaseKeeper(shard)
    started = time.perf_counter()
    with progress_listener(keeper):
        if shard.kind == Kind.DOWNLOAD:
            outcome = _download(shard)
        else:
            outcome = _embed(shard, model=build.model)
    seconds = round(time.perf_counter() - started, 3)
    return ShardOutcome(
        done=outcome.done, reused=outcome.reused, failures=outcome.failures,
        timings={"seconds": seconds, **(outcome.timings or {})},
    )


def _download(shard: BuildShard) -> ShardOutcome:
    from catalog.services.downloads import images_download

    ids = Article.objects.filter(
        pk__gte=shard.first_pk, pk__lte=shard.last_pk, is_active=True
    ).values_list("article_id", flat=True)
    summary = images_download(article_ids=list(ids), progress=False)
    return ShardOutcome(
        done=summary.downloaded, reused=summary.skipped, failures=summary.failures
    )


def _embed(shard: BuildShard, *, model: str) -> ShardOutcome:
    conf = similarity_settings()
    embedder, _device = _worker_embedder(model=model, options=shard.options)
    summary = embeddings_update(
        embedder=embedder,
        batch_size=shard.options.get("batch_size") or conf.batch_size,
        decode_workers=conf.decode_workers,
        reembed=shard.reembed,
        progress=False,
        pk_range=(shard.first_pk, shard.last_pk),
    )
    return ShardOutcome(
        done=summary.embedded, reused=summary.reused, failures=summary.failures,
        timings={"embed": summary.timings.as_dict()},
    )


def _build_fail(build_id: int, error: str) -> None:
    IndexBuild.objects.filter(pk=build_id, status=IndexBuild.Status.RUNNING).update(
        status=IndexBuild.Status.FAILED, error=error, finished_at=timezone.now()
    )


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
    ("collect", step_collect),
    ("index", step_index),
    ("neighbours", step_neighbours),
)


def finish_options(*, build_id: int) -> dict[str, Any]:
    """The options the starter recorded on the shards (runtime, batch size)."""
    first = BuildShard.objects.filter(build_id=build_id).order_by("pk").first()
    return first.options if first else {}
