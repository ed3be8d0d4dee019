"""The build lock: claiming it, proving life (heartbeat) and progress, reaping dead builds.

The database is the lock: a partial unique constraint allows one ``running`` row. A build
proves it lives with a heartbeat thread (``heartbeat_at``) and that it moves with
``progress_at`` (each finished step, each batch of any progress bar). A running build whose
heartbeat or progress is older than BUILD_STALE_SECONDS is marked failed by the next build
request, by ``builds.queue.builds_reap`` (a django-q2 schedule every minute, ``manage.py
reap_builds``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.errors import BuildAlreadyRunning, BuildTakenOver
from similarity.models import IndexBuild

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
PROGRESS_WRITE_SECONDS = 5.0  # progress_at is written at most this often
MSG_DEAD = "abandoned: its process stopped sending heartbeats (last at {at}, {process})"
MSG_HUNG = (
    "hung: no progress for more than {stale} s in step {phase!r} (last at {at}, {process}); "
    "its process may still be alive: stop it"
)
MSG_RUNNING = "another build was running (#{running})"


def stale_seconds() -> int:
    return similarity_settings().build_stale_seconds


def beat_interval(stale: float | None = None) -> float:
    """How often a live build writes: well inside the stale time, at most every 10 s."""
    stale = stale_seconds() if stale is None else stale
    return min(HEARTBEAT_SECONDS, stale / 4)


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Reaped:
    build_id: int
    reason: str  # "dead" or "hung"
    error: str


def running_builds_reap(*, now: datetime | None = None) -> list[Reaped]:
    """Mark running builds with no heartbeat or no progress for the stale time as failed.

    Each row is updated only if it still carries the timestamps that were judged, so a build
    that beats in between is left alone.
    """
    stale = stale_seconds()
    now = now or timezone.now()
    before = now - timedelta(seconds=stale)
    reaped: list[Reaped] = []
    running = IndexBuild.objects.filter(status=IndexBuild.Status.RUNNING).annotate(
        beat=Coalesce("heartbeat_at", "started_at", "created_at"),
        moved=Coalesce("progress_at", "started_at", "created_at"),
    )
    for build in running.filter(Q(beat__lt=before) | Q(moved__lt=before)):
        dead = build.beat < before
        at = build.beat if dead else build.moved
        error = (
            MSG_DEAD.format(at=at.isoformat(timespec="seconds"), process=build.process or "?")
            if dead
            else MSG_HUNG.format(
                stale=stale, phase=build.phase, at=at.isoformat(timespec="seconds"),
                process=build.process or "?",
            )
        )
        updated = IndexBuild.objects.filter(
            pk=build.pk,
            status=IndexBuild.Status.RUNNING,
            heartbeat_at=build.heartbeat_at,
            progress_at=build.progress_at,
        ).update(status=IndexBuild.Status.FAILED, error=error, finished_at=now)
        if updated:
            logger.warning("Build #%s marked failed: %s", build.pk, error)
            reaped.append(Reaped(build.pk, "dead" if dead else "hung", error))
    return reaped


def build_start(**fields: object) -> IndexBuild:
    """Create a build that runs now (shell, demo): the insert itself takes the lock.

    Dead or hung builds are reaped first. When another build runs, the request is recorded
    as skipped and BuildAlreadyRunning is raised.
    """
    running_builds_reap()
    now = timezone.now()
    lock = {"started_at": now, "heartbeat_at": now, "progress_at": now, "process": this_process()}
    try:
        with transaction.atomic():
            return IndexBuild.objects.create(status=IndexBuild.Status.RUNNING, **lock, **fields)
    except IntegrityError:
        running = _running_id()
        IndexBuild.objects.create(
            status=IndexBuild.Status.SKIPPED,
            error=MSG_RUNNING.format(running=running),
            finished_at=now,
            **fields,
        )
        raise BuildAlreadyRunning(running) from None


def build_claim(*, build: IndexBuild) -> bool:
    """Move a queued ``build`` to running; False when it is no longer queued.

    When another build runs, the queued build stays queued (the reaper hands it to a worker
    again once the lock is free) and BuildAlreadyRunning is raised.
    """
    running_builds_reap()
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = IndexBuild.objects.filter(
                pk=build.pk, status=IndexBuild.Status.QUEUED
            ).update(
                status=IndexBuild.Status.RUNNING,
                started_at=now,
                heartbeat_at=now,
                progress_at=now,
                process=this_process(),
            )
    except IntegrityError:
        raise BuildAlreadyRunning(_running_id()) from None
    build.refresh_from_db()
    return bool(claimed)


def _running_id() -> int | None:
    running = IndexBuild.objects.filter(status=IndexBuild.Status.RUNNING).first()
    return running.pk if running else None


class BuildTracker:
    """Records a running build's step and progress; raises BuildTakenOver once it lost the lock.

    ``step`` is written at once; ``progressed`` (every update of a progress bar during the
    build) at most every few seconds. Both write only while the row is still running: a build
    another process declared dead or hung stops at its next step or batch instead of going on.
    """

    def __init__(
        self, build_pk: int, *, clock: Callable[[], float] = time.monotonic,
        min_interval: float | None = None,
    ) -> None:
        self.build_pk = build_pk
        self._clock = clock
        self._interval = (
            min(PROGRESS_WRITE_SECONDS, beat_interval()) if min_interval is None else min_interval
        )
        self._last = clock()

    def step(self, name: str) -> None:
        self._write(phase=name)

    def progressed(self, _n: int = 1) -> None:
        if self._clock() - self._last >= self._interval:
            self._write()

    def _write(self, **values: object) -> None:
        self._last = self._clock()
        updated = IndexBuild.objects.filter(
            pk=self.build_pk, status=IndexBuild.Status.RUNNING
        ).update(progress_at=timezone.now(), **values)
        if not updated:
            raise BuildTakenOver(self.build_pk)


class Heartbeat:
    """Beats for a running build from a daemon thread, through every phase of the build.

    A beat inside one phase only (say, the embedding loop) would let a long download, index
    build or neighbor refresh look abandoned, and a second build would take over.
    """

    def __init__(self, build_pk: int, interval: float | None = None) -> None:
        self.build_pk = build_pk
        self.interval = beat_interval() if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"build-{build_pk}-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.interval):
                try:
                    IndexBuild.objects.filter(
                        pk=self.build_pk, status=IndexBuild.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a busy database: the next beat tries again
                    logger.warning("Heartbeat of build #%s failed", self.build_pk, exc_info=True)
        finally:
            connection.close()
