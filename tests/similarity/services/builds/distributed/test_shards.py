"""Claiming shards under a lease (runs on SQLite and PostgreSQL: each has its own claim)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from similarity.errors import BuildTakenOver
from similarity.models import BuildShard, IndexBuild
from similarity.services.builds.distributed.shards import (
    ShardLost,
    ShardOutcome,
    shard_claim,
    shard_complete,
    shard_counts,
    shard_enqueued,
    shard_lease_renew,
    shards_needing_a_task,
    shards_plan,
)

pytestmark = pytest.mark.django_db

EMBED = BuildShard.Kind.EMBED


@pytest.fixture
def build(settings) -> IndexBuild:
    settings.LOOKALIKE = {**settings.LOOKALIKE, "SHARD_LEASE_SECONDS": 30}
    now = timezone.now()
    return IndexBuild.objects.create(
        status=IndexBuild.Status.RUNNING, model="classic", index_type="flat", started_at=now,
        heartbeat_at=now, progress_at=now, phase="embed shards",
    )


def plan(build: IndexBuild, count: int = 25, size: int = 10) -> list[BuildShard]:
    return shards_plan(build=build, kind=EMBED, pks=list(range(count, 0, -1)), size=size)


def expire(shard: BuildShard) -> None:
    BuildShard.objects.filter(pk=shard.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


def test_plan_splits_sorted_pks_into_inclusive_ranges(build):
    shards = plan(build)
    assert [(s.first_pk, s.last_pk, s.article_count) for s in shards] == [
        (1, 10, 10), (11, 20, 10), (21, 25, 5)
    ]
    assert all(s.state == BuildShard.State.PENDING and s.attempts == 0 for s in shards)
    with pytest.raises(ValueError, match="shard size must be >= 1; got 0"):
        shards_plan(build=build, kind=EMBED, pks=[1], size=0)


def test_claims_take_distinct_shards_then_none(build):
    shards = plan(build)
    claimed = [shard_claim(build_id=build.pk, kind=EMBED, device="cpu") for _ in range(3)]
    assert sorted(s.pk for s in claimed) == sorted(s.pk for s in shards)
    for shard in claimed:
        assert shard.state == BuildShard.State.CLAIMED and shard.attempts == 1
        assert shard.worker_pid and shard.worker_host and shard.device == "cpu"
        assert shard.lease_expires_at > timezone.now() + timedelta(seconds=25)
    assert shard_claim(build_id=build.pk, kind=EMBED) is None
    assert shard_claim(build_id=build.pk, kind=BuildShard.Kind.DOWNLOAD) is None
    assert shard_counts(build_id=build.pk).open == 3


def test_the_preferred_shard_is_claimed_first_else_any(build):
    first, second, _third = plan(build)
    assert shard_claim(build_id=build.pk, kind=EMBED, preferred=second.pk).pk == second.pk
    # Held: the task for it steals another shard instead.
    assert shard_claim(build_id=build.pk, kind=EMBED, preferred=second.pk).pk == first.pk


def test_an_expired_lease_is_claimed_again_and_the_old_holder_is_told(build):
    (shard,) = plan(build, count=5)
    old = shard_claim(build_id=build.pk, kind=EMBED)
    shard_lease_renew(shard=old, done=2)  # live: renewing works
    assert shard_claim(build_id=build.pk, kind=EMBED) is None
    expire(old)
    new = shard_claim(build_id=build.pk, kind=EMBED)
    assert new.pk == shard.pk and new.attempts == 2
    with pytest.raises(ShardLost, match=f"shard #{shard.pk} of build #{build.pk} was taken"):
        shard_lease_renew(shard=old)
    with pytest.raises(ShardLost):
        shard_complete(shard=old, outcome=ShardOutcome(done=5))
    shard_complete(shard=new, outcome=ShardOutcome(done=3, reused=2, failures=[("A1", "bad")]))
    new.refresh_from_db()
    assert (new.state, new.done_count, new.reused_count, new.failed_count) == ("done", 3, 2, 1)
    assert new.failures == [{"article_id": "A1", "reason": "bad"}]
    assert shard_claim(build_id=build.pk, kind=EMBED) is None  # done is never claimed again


def test_renewing_beats_for_the_build_and_stops_when_it_no_longer_runs(build):
    plan(build, count=5)
    shard = shard_claim(build_id=build.pk, kind=EMBED)
    before = IndexBuild.objects.get(pk=build.pk).progress_at
    shard_lease_renew(shard=shard, done=1)
    assert IndexBuild.objects.get(pk=build.pk).progress_at > before
    IndexBuild.objects.filter(pk=build.pk).update(status=IndexBuild.Status.FAILED)
    with pytest.raises(BuildTakenOver):
        shard_lease_renew(shard=shard, done=2)


def test_lost_tasks_are_found_once_per_lease(build):
    a, b, c = plan(build)
    shard_enqueued(shard_ids=[a.pk, b.pk, c.pk])
    BuildShard.objects.update(enqueued_at=timezone.now() - timedelta(seconds=10))
    held = shard_claim(build_id=build.pk, kind=EMBED, preferred=a.pk)
    # A worker holds a live lease: it will steal b and c itself, nothing is re-sent.
    assert shards_needing_a_task(build_id=build.pk) == []
    expire(held)
    # The holder died: its shard needs a task; the pending ones too (nobody holds a lease),
    # once their last task is older than the lease time.
    assert [s.pk for s in shards_needing_a_task(build_id=build.pk)] == [a.pk]
    BuildShard.objects.filter(pk__in=[b.pk, c.pk]).update(
        enqueued_at=timezone.now() - timedelta(seconds=31)
    )
    assert sorted(s.pk for s in shards_needing_a_task(build_id=build.pk)) == [a.pk, b.pk, c.pk]
    shard_enqueued(shard_ids=[a.pk, b.pk, c.pk])
    assert shards_needing_a_task(build_id=build.pk) == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_on_postgresql_never_share_a_shard(settings):
    """Eight threads (own connections) claim at once: SKIP LOCKED gives each its own row."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("threads racing on the in-memory SQLite test database; runs on PostgreSQL")
    settings.LOOKALIKE = {**settings.LOOKALIKE, "SHARD_LEASE_SECONDS": 30}
    now = timezone.now()
    build = IndexBuild.objects.create(
        status=IndexBuild.Status.RUNNING, model="classic", index_type="flat", started_at=now,
        heartbeat_at=now, progress_at=now, phase="embed shards",
    )
    shards = plan(build, count=50, size=10)
    barrier = Barrier(8)

    def claim(_: int) -> int | None:
        try:
            barrier.wait(timeout=30)
            shard = shard_claim(build_id=build.pk, kind=EMBED)
            return shard.pk if shard else None
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(claim, range(8)))
    claimed = [pk for pk in won if pk is not None]
    assert sorted(claimed) == sorted(s.pk for s in shards)  # 5 shards, 5 winners, no twice
    assert won.count(None) == 3
    assert set(BuildShard.objects.values_list("attempts", flat=True)) == {1}
