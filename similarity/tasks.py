"""django-q2 tasks: background index builds, their shards, and the periodic check of builds."""

from __future__ import annotations

import logging

from similarity.errors import BuildAlreadyRunning
from similarity.models import IndexBuild

logger = logging.getLogger(__name__)

REAP_SCHEDULE_NAME = "lookalike: reap dead or hung index builds"


def index_build_task(build_id: int) -> str:
    """Run a queued build in a django-q2 worker; returns the final status.

    When another build is running, the build stays queued: ``builds_reap`` hands it to a
    worker again once the lock is free. Progress is logged (no TTY in a worker).
    """
    from similarity.services.builds.runs import index_build_run

    build = IndexBuild.objects.get(pk=build_id)
    try:
        # A distributed build (DISTRIBUTED_BUILDS) returns once its shards are sent: no
        # worker waits on them; the worker closing the last one sends build_finish_task.
        build = index_build_run(build=build, progress=True, wait=False)
    except BuildAlreadyRunning as exc:
        logger.warning("Build #%s waits: %s", build_id, exc)
        return IndexBuild.Status.QUEUED
    return build.status


def match_run_task(run_id: int) -> str:
    """Run a queued supplier match run (admin upload) in a django-q2 worker; its final status."""
    from similarity.models import MatchRun
    from similarity.services.matching.runs import match_run_execute

    run = match_run_execute(run=MatchRun.objects.get(pk=run_id), progress=True)
    return run.status


def builds_reap() -> str:
    """Scheduled every minute (see apps.py): fail dead and hung builds, restart a waiting one."""
    from similarity.services.builds.queue import builds_reap as reap

    report = str(reap())
    logger.info("Build check: %s", report)
    return report


def build_shard_task(shard_id: int) -> str:
    """Run a distributed build's shard, then any other claimable shard of the same build and
    kind (work stealing), so a shard whose task was lost with its worker still gets done."""
    from similarity.services.builds.distributed.worker import build_shard_work

    return build_shard_work(shard_id=shard_id)


def build_finish_task(build_id: int) -> str:
    """The end of a distributed build: collect the vectors, index and publish."""
    from similarity.services.builds.runs import index_build_finish

    return index_build_finish(build_id=build_id).status
