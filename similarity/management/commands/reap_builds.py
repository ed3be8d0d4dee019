"""manage.py reap_builds: fail dead or hung index builds, restart a queued one left waiting."""

from __future__ import annotations

from typing import Any

from catalog.management.base import LookalikeCommand
from similarity.services.builds.queue import builds_reap


class Command(LookalikeCommand):
    help = (
        "Mark running index builds without a heartbeat or without progress for "
        "BUILD_STALE_SECONDS as failed, and hand a queued build that waits to a worker again. "
        "The qcluster runs this every minute; run it from cron when no qcluster runs."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(str(builds_reap()))
