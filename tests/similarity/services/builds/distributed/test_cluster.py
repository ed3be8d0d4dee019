"""Distributed builds over two real django-q2 clusters (PostgreSQL + Redis).

Two ``manage.py qcluster`` subprocesses share the test database (pytest-django's
``test_<name>``: its NAME is passed to them) and the Redis queue; the tests use committed
transactions (``transaction=True``) so the workers see the catalog and the shards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from similarity.models import BuildShard, Embedding, IndexBuild
from similarity.services.builds.distributed.plan import build_shards_watch
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[5]
ARTICLES = 200
SHARD_SIZE = 20
LEASE_SECONDS = 3
DEADLINE_SECONDS = 40


@pytest.fixture
def cluster_env(settings, data_dir: Path, monkeypatch) -> dict[str, str]:
    """Environment of worker processes sharing this test's database, Redis and data dir."""
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip(
            "two real qcluster workers share the shard table (SELECT ... FOR UPDATE SKIP "
            "LOCKED) and a Redis queue: run with DATABASE_URL=postgres://... and REDIS_URL"
        )
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)  # tasks go to Redis, not inline
    for queue in (None, "embed"):  # tasks a failed run may have left behind
        get_broker(queue).purge_queue()
    settings.LOOKALIKE = {
        **settings.LOOKALIKE, "MODEL": "classic", "SHARD_SIZE": SHARD_SIZE,
        "SHARD_LEASE_SECONDS": LEASE_SECONDS,
    }
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,  # task payloads are signed with it
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "LOOKALIKE_MODEL": "classic",
        "LOOKALIKE_SHARD_LEASE_SECONDS": str(LEASE_SECONDS),
        "LOOKALIKE_BATCH_SIZE": "4",
        "LOOKALIKE_THREADS": "1",
        "LOOKALIKE_DECODE_WORKERS": "1",
        "LOOKALIKE_Q_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
    }


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = DEADLINE_SECONDS,
             every: Callable[[], object] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if every is not None:
            every()
        time.sleep(0.1)  # a poll interval, not a wait for an outcome
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def start_clusters(
    env: dict[str, str], logs: Path, names: tuple[str, ...] = ("", "")
) -> Iterator[list[subprocess.Popen]]:
    """qcluster processes (one worker each; a name = that queue), idle and polling."""
    from django_q.status import Stat

    started = []
    for n, name in enumerate(names):
        log = (logs / f"qcluster-{n}.log").open("wb")
        started.append(subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT,
            env={**env, "Q_CLUSTER_NAME": name} if name else env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))
    try:
        pids = {process.pid for process in started}
        wait_for(
            lambda: pids <= {s.pid for s in Stat.get_all() if s.status == "Idle" and s.workers},
            what="both clusters to be idle", timeout=30,
        )
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # the group of the process we started
            process.wait(timeout=10)


@pytest.fixture
def workers(cluster_env: dict[str, str], tmp_path: Path) -> Iterator[list[subprocess.Popen]]:
    """Two qcluster processes on the default queue."""
    with start_clusters(cluster_env, tmp_path) as started:
        yield started


def cluster_worker_pids(cluster: subprocess.Popen) -> set[int]:
    from django_q.status import Stat

    return {pid for s in Stat.get_all() if s.pid == cluster.pid for pid in s.workers}


def build_ended(build_id: int) -> IndexBuild | None:
    build = IndexBuild.objects.get(pk=build_id)
    return build if build.status != IndexBuild.Status.RUNNING else None


def test_two_workers_share_the_shards_and_embed_every_article_once(workers):
    make_catalog(ARTICLES, size=160)
    build = index_build_run(distributed=True, wait=False, progress=False)
    build = wait_for(lambda: build_ended(build.pk), what="the build to end")
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    shards = list(build.shards.all())
    assert len(shards) == ARTICLES // SHARD_SIZE
    assert {s.state for s in shards} == {BuildShard.State.DONE}
    assert Embedding.objects.count() == ARTICLES == build.article_count
    assert sum(s.done_count for s in shards) == ARTICLES == build.embedded_count
    worker_pids = {s.worker_pid for s in shards}
    assert len(worker_pids) == 2, f"one worker took every shard: {worker_pids}"
    assert worker_pids <= cluster_worker_pids(workers[0]) | cluster_worker_pids(workers[1])
    assert build.manifest["distributed"] == {"shards": len(shards), "workers": 2}


def test_a_worker_killed_mid_shard_loses_no_shard(workers):
    make_catalog(ARTICLES, size=160)
    victims = cluster_worker_pids(workers[0])
    build = index_build_run(distributed=True, wait=False, progress=False)

    def held_by_victim() -> BuildShard | None:
        return BuildShard.objects.filter(
            build=build, state=BuildShard.State.CLAIMED, worker_pid__in=victims
        ).first()

    victim = wait_for(held_by_victim, what="a shard claimed by the first cluster's worker")
    os.kill(victim.worker_pid, signal.SIGKILL)
    killed = BuildShard.objects.get(
        build=build, state=BuildShard.State.CLAIMED, worker_pid=victim.worker_pid
    )  # claims commit before the work: what it held when it died
    # The coordinator's watch (build_index --distributed waiting, or the reaper schedule)
    # re-sends tasks for expired leases; the other worker's stealing loop may come first.
    build = wait_for(
        lambda: build_ended(build.pk), what="the build to end after the lease expired",
        every=lambda: build_shards_watch(build_id=build.pk),
    )
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    killed.refresh_from_db()
    assert killed.state == BuildShard.State.DONE and killed.attempts >= 2
    assert killed.worker_pid != victim.worker_pid
    assert Embedding.objects.count() == ARTICLES == build.article_count


def test_embed_shards_run_on_the_embed_cluster_and_the_finish_on_the_default(
    cluster_env, tmp_path, settings
):
    from django_q.models import Task

    settings.LOOKALIKE = {**settings.LOOKALIKE, "EMBED_CLUSTER": "embed"}
    env = {**cluster_env, "LOOKALIKE_EMBED_CLUSTER": "embed"}
    make_catalog(60, size=96)
    with start_clusters(env, tmp_path, names=("", "embed")) as (_default, embed):
        build = index_build_run(distributed=True, wait=False, progress=False)
        build = wait_for(lambda: build_ended(build.pk), what="the build to end")
        assert build.status == IndexBuild.Status.SUCCEEDED, build.error
        assert {s.worker_pid for s in build.shards.all()} <= cluster_worker_pids(embed)
        finish = f"build-{build.pk}-finish"
        # A worker's monitor saves the task record after the task returned: wait for it.
        wait_for(lambda: Task.objects.filter(name=finish).exists(), what="the finish record")
        ran = dict(Task.objects.filter(name__startswith=f"build-{build.pk}-").values_list(
            "name", "cluster"
        ))
        assert ran.pop(finish) == "lookalike"  # the default queue
        assert ran and set(ran.values()) == {"embed"}
        assert Embedding.objects.count() == 60
