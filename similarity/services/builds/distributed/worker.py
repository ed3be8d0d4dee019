"""The worker side of a distributed build: a shard task claims shards and runs them.

See ``builds.distributed.plan`` for the protocol. A task claims its own shard, or once that is
done or held, any other claimable shard of the same build and kind (work stealing), and runs
shards until none is left; after each it lets the build move on (``build_shards_advance``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.utils import timezone

from catalog.models import Article
from catalog.progress import progress_listener
from similarity.conf import similarity_settings
from similarity.embedders import OtherWeights, ProvidedEmbedder, embedder_for
from similarity.engine.embedders import EmbedderLoadError
from similarity.errors import BuildTakenOver
from similarity.models import BuildShard, IndexBuild
from similarity.services.builds.distributed.plan import build_shards_advance
from similarity.services.builds.distributed.shards import (
    LeaseKeeper,
    ShardLost,
    ShardOutcome,
    shard_claim,
    shard_complete,
    shard_fail,
    worker_identity,
)
from similarity.services.indexing.embeddings import embeddings_update

logger = logging.getLogger(__name__)

MSG_SHARD_FAILED = "{kind} shard #{shard} (articles {first}-{last}) failed on {worker}: {error}"

MSG_OTHER_WEIGHTS = (
    "worker {worker} loads other weights for {model!r} ({found}) than the build planned "
    "({expected}): give every worker the same model files"
)

Kind = BuildShard.Kind


def _worker_embedder(*, model: str, options: dict[str, Any]) -> ProvidedEmbedder:
    """The model on the runtime the build planned, with the weights it planned (the
    process's provider loads and gates it once)."""
    return embedder_for(model, runtime=options.get("runtime"), identity=options.get("identity"))


def build_shard_work(*, shard_id: int) -> str:
    """A shard task: claim this shard (or, once it is done or held, any other claimable
    shard of the same build and kind) and run shards until none is left to claim."""
    first = BuildShard.objects.select_related("build").filter(pk=shard_id).first()
    if first is None:
        return "no such shard"
    build = first.build
    if build.status != IndexBuild.Status.RUNNING:
        return f"build #{build.pk} is {build.status}"
    device = ""
    if first.kind == Kind.EMBED:
        try:
            device = _worker_embedder(model=build.model, options=first.options).device
        except Exception as exc:  # a model, weights or device this machine cannot use
            _build_fail(build.pk, _cannot_embed(build, exc))
            return "failed"
    return _shards_run(build, kind=first.kind, preferred=shard_id, device=device)


def _cannot_embed(build: IndexBuild, exc: Exception) -> str:
    host, pid = worker_identity()
    if isinstance(exc, OtherWeights):
        return MSG_OTHER_WEIGHTS.format(
            worker=f"{host}:{pid}", model=build.model, found=exc.found, expected=exc.expected
        )
    reason = str(exc) if isinstance(exc, EmbedderLoadError) else f"{type(exc).__name__}: {exc}"
    return f"worker {host}:{pid} cannot embed: {reason}"


def _shards_run(build: IndexBuild, *, kind: str, preferred: int | None, device: str) -> str:
    """Claim and run shards of ``build`` and ``kind`` (``preferred`` first) while any is
    claimable, the build runs and the task has time left; what was done, or "failed"."""
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
            _shard_failed(shard, build, exc)
            return "failed"
        ran += 1
        build_shards_advance(build_id=build.pk)
    return f"{ran} shard(s) run"


def _shard_failed(shard: BuildShard, build: IndexBuild, exc: Exception) -> None:
    error = MSG_SHARD_FAILED.format(
        kind=shard.kind, shard=shard.pk, first=shard.first_pk, last=shard.last_pk,
        worker=shard.worker, error=f"{type(exc).__name__}: {exc}",
    )
    logger.exception("%s", error)
    shard_fail(shard=shard, error=error)
    _build_fail(build.pk, error)


def _task_timeout() -> float:
    return similarity_settings().task_timeout


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
    provided = _worker_embedder(model=model, options=shard.options)
    summary = embeddings_update(
        embedder=provided.embedder,
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
