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
