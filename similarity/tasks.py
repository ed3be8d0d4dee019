"""django-q2 tasks: background index builds and the periodic check of running builds."""

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
    from similarity.services.builds import index_build_run

    build = IndexBuild.objects.get(pk=build_id)
    try:
        build = index_build_run(build=build, progress=True)
    except BuildAlreadyRunning as exc:
        logger.warning("Build #%s waits: %s", build_id, exc)
        return IndexBuild.Status.QUEUED
    return build.status


def match_run_task(run_id: int) -> str:
    """Run a queued supplier match run (admin upload) in a django-q2 worker; its final status."""
    from similarity.models import MatchRun
    from similarity.services.match_runs import match_run_execute

    run = match_run_execute(run=MatchRun.objects.get(pk=run_id), progress=True)
    return run.status


def builds_reap() -> str:
    """Scheduled every minute (see apps.py): fail dead and hung builds, restart a waiting one."""
    from similarity.services.builds import builds_reap as reap

    report = str(reap())
    logger.info("Build check: %s", report)
    return report
