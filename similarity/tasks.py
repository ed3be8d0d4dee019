"""django-q2 tasks: background index builds."""

from __future__ import annotations

import logging

from similarity.errors import BuildAlreadyRunning
from similarity.models import IndexBuild

logger = logging.getLogger(__name__)


def index_build_task(build_id: int) -> str:
    """Run a queued build in a django-q2 worker; returns the final status."""
    from similarity.services.builds import index_build_run

    build = IndexBuild.objects.get(pk=build_id)
    try:
        build = index_build_run(build=build, progress=False)
    except BuildAlreadyRunning as exc:
        logger.warning("Build #%s skipped: %s", build_id, exc)
        return IndexBuild.Status.SKIPPED
    return build.status


def match_run_task(run_id: int) -> str:
    """Run a queued supplier match run (admin upload) in a django-q2 worker; its final status."""
    from similarity.models import MatchRun
    from similarity.services.match_runs import match_run_execute

    run = match_run_execute(run=MatchRun.objects.get(pk=run_id))
    return run.status
