"""Shards of a distributed build: planning, claiming under a lease, renewing it, closing it.

A shard is a row (``BuildShard``) covering an article pk range. A worker claims it for
SHARD_LEASE_SECONDS and renews the lease while it progresses; a shard whose lease expired
(its worker died, or hangs) is claimable again, so a task lost with its worker (the Redis
broker has no delivery receipts) never loses its shard.

The claim: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a claimable row no other
transaction holds, then updates it; concurrent claimers never wait on each other and never
get the same row. SQLite has no row locks: the claim is ``UPDATE ... WHERE pk = x AND
(state = 'pending' OR lease expired)`` and the rowcount says who won (SQLite serialises
writers, so exactly one UPDATE sees the row still claimable).

Every write of a holder is guarded by (worker host, pid, attempt): a worker whose lease was
taken over learns it at its next renewal (ShardLost) and stops; what it stored stays valid.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.errors import BuildTakenOver
from similarity.models import BuildShard, IndexBuild

logger = logging.getLogger(__name__)

SQLITE_CLAIM_CANDIDATES = 8  # rows tried per SQLite claim before giving up for this round
MAX_STORED_FAILURES = 200  # per shard; the build keeps the first 1000 of all shards


class ShardLost(Exception):
    """This worker's lease on a shard expired and another worker claimed it: stop."""

    def __init__(self, shard: BuildShard) -> None:
        super().__init__(
            f"{shard.kind} shard #{shard.pk} of build #{shard.build_id} was taken over "
            f"(lease expired; attempt {shard.attempts} on {shard.worker} lost it)"
        )


def worker_identity() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def lease_seconds() -> int:
    return similarity_settings().shard_lease_seconds


def shards_plan(
    *,
    build: IndexBuild,
    kind: str,
    pks: Sequence[int],
    size: int,
    options: dict[str, Any] | None = None,
    reembed: bool = False,
) -> list[BuildShard]:
    """Pending shards of ``size`` articles each over the sorted ``pks`` (inclusive ranges)."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1; got {size}")
    ordered = sorted(pks)
    shards = [
        BuildShard(
            build=build,
            kind=kind,
            first_pk=chunk[0],
            last_pk=chunk[-1],
            article_count=len(chunk),
            reembed=reembed,
            options=options or {},
        )
        for chunk in (ordered[i : i + size] for i in range(0, len(ordered), size))
    ]
    return BuildShard.objects.bulk_create(shards)


def _claimable(now: datetime) -> Q:
    return Q(state=BuildShard.State.PENDING) | Q(
        state=BuildShard.State.CLAIMED, lease_expires_at__lt=now
    )


def shard_claim(
    *, build_id: int, kind: str, preferred: int | None = None, device: str = ""
) -> BuildShard | None:
    """Claim ``preferred`` if it is claimable, else any claimable shard of the build and kind.

    None when every shard of that kind is done, failed or held under a live lease.
    """
    now = timezone.now()
    host, pid = worker_identity()
    values = {
        "state": BuildShard.State.CLAIMED,
        "worker_host": host,
        "worker_pid": pid,
        "device": device,
        "attempts": F("attempts") + 1,
        "lease_expires_at": now + timedelta(seconds=lease_seconds()),
        "started_at": now,
        "finished_at": None,
        "error": "",
    }
    candidates = BuildShard.objects.filter(build_id=build_id, kind=kind).filter(_claimable(now))
    claimed = (
        _claim_locking(candidates, preferred, values)
        if connection.vendor == "postgresql"
        else _claim_guarded(candidates, preferred, values)
    )
    if claimed is None:
        return None
    shard = BuildShard.objects.get(pk=claimed)
    if shard.attempts > 1:
        logger.warning("Re-running %s: attempt %d", shard, shard.attempts)
    return shard


def _claim_locking(
    candidates: QuerySet[BuildShard], preferred: int | None, values: dict[str, Any]
) -> int | None:
    with transaction.atomic():
        locked = candidates.select_for_update(skip_locked=True)
        pk = None
        if preferred is not None:
            pk = locked.filter(pk=preferred).values_list("pk", flat=True).first()
        if pk is None:
            pk = locked.order_by("pk").values_list("pk", flat=True).first()
        if pk is None:
            return None
        BuildShard.objects.filter(pk=pk).update(**values)
        return pk


def _claim_guarded(
    candidates: QuerySet[BuildShard], preferred: int | None, values: dict[str, Any]
) -> int | None:
    tried = [preferred] if preferred is not None else []
    tried += list(candidates.order_by("pk").values_list("pk", flat=True)[:SQLITE_CLAIM_CANDIDATES])
    for pk in tried:
        if candidates.filter(pk=pk).update(**values):  # WHERE still claimable: we won it
            return pk
    return None


def _held(shard: BuildShard) -> QuerySet[BuildShard]:
    """The shard row while this holder's claim is still the current one."""
    return BuildShard.objects.filter(
        pk=shard.pk,
        state=BuildShard.State.CLAIMED,
        worker_host=shard.worker_host,
        worker_pid=shard.worker_pid,
        attempts=shard.attempts,
    )


def shard_lease_renew(*, shard: BuildShard, done: int | None = None) -> None:
    """Extend the lease; count the build as alive and moving. ShardLost / BuildTakenOver."""
    now = timezone.now()
    values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_seconds())}
    if done is not None:
        values["done_count"] = done
    if not _held(shard).update(**values):
        raise ShardLost(shard)
    beat = IndexBuild.objects.filter(pk=shard.build_id, status=IndexBuild.Status.RUNNING)
    if not beat.update(heartbeat_at=now, progress_at=now):
        raise BuildTakenOver(shard.build_id)


class LeaseKeeper:
    """A progress listener: renews the lease at most every third of the lease time."""

    def __init__(self, shard: BuildShard, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.shard = shard
        self.done = 0
        self._clock = clock
        self._interval = max(lease_seconds() / 3, 0.2)
        self._last = clock()

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self._clock() - self._last >= self._interval:
            self._last = self._clock()
            shard_lease_renew(shard=self.shard, done=self.done)


@dataclass(frozen=True)
class ShardOutcome:
    done: int
    reused: int = 0
    failures: Sequence[tuple[str, str]] = ()
    timings: dict[str, Any] | None = None


def shard_complete(*, shard: BuildShard, outcome: ShardOutcome) -> None:
    """Mark the shard done with its counts; ShardLost when another worker holds it now."""
    values = {
        "state": BuildShard.State.DONE,
        "finished_at": timezone.now(),
        "lease_expires_at": None,
        "done_count": outcome.done,
        "reused_count": outcome.reused,
        "failed_count": len(outcome.failures),
        "failures": [
            {"article_id": article_id, "reason": reason}
            for article_id, reason in list(outcome.failures)[:MAX_STORED_FAILURES]
        ],
        "timings": {**shard.timings, **(outcome.timings or {})},
    }
    if not _held(shard).update(**values):
        raise ShardLost(shard)


def shard_fail(*, shard: BuildShard, error: str) -> None:
    """Mark the shard failed (its build fails with the error), if this worker still holds it."""
    _held(shard).update(
        state=BuildShard.State.FAILED, error=error, finished_at=timezone.now(),
        lease_expires_at=None,
    )


@dataclass(frozen=True)
class ShardCounts:
    total: int
    open: int  # pending or claimed
    failed: int
    expired: int  # claimed with an expired lease


def shard_counts(*, build_id: int, kind: str | None = None) -> ShardCounts:
    shards = BuildShard.objects.filter(build_id=build_id)
    if kind is not None:
        shards = shards.filter(kind=kind)
    State = BuildShard.State
    now = timezone.now()
    counts = shards.aggregate(
        total=Count("pk"),
        open=Count("pk", filter=Q(state__in=[State.PENDING, State.CLAIMED])),
        failed=Count("pk", filter=Q(state=State.FAILED)),
        expired=Count("pk", filter=Q(state=State.CLAIMED, lease_expires_at__lt=now)),
    )
    return ShardCounts(**counts)


def shard_totals(*, build_id: int, kind: str) -> dict[str, int]:
    """Sums over the done shards of a kind: done (embedded/downloaded), reused, failed."""
    sums = BuildShard.objects.filter(
        build_id=build_id, kind=kind, state=BuildShard.State.DONE
    ).aggregate(done=Sum("done_count"), reused=Sum("reused_count"), failed=Sum("failed_count"))
    return {key: int(value or 0) for key, value in sums.items()}


def shards_needing_a_task(*, build_id: int) -> list[BuildShard]:
    """Shards whose task may have been lost, so a new one is sent.

    A claimed shard whose lease expired with no task sent since. Pending shards only when no
    worker holds a live lease on any shard of the build (busy workers steal pending shards
    themselves) and their last task is older than the lease time: a watch every few seconds
    never floods the queue.
    """
    now = timezone.now()
    shards = BuildShard.objects.filter(build_id=build_id)
    State = BuildShard.State
    expired = shards.filter(state=State.CLAIMED, lease_expires_at__lt=now).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=F("lease_expires_at"))
    )
    found = list(expired)
    live = shards.filter(state=State.CLAIMED, lease_expires_at__gte=now).exists()
    if not live:
        quiet = now - timedelta(seconds=lease_seconds())
        found += list(
            shards.filter(state=State.PENDING).filter(
                Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=quiet)
            )
        )
    return found


def shard_enqueued(*, shard_ids: Sequence[int]) -> None:
    BuildShard.objects.filter(pk__in=list(shard_ids)).update(enqueued_at=timezone.now())
