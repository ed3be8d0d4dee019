"""The build queue and the broker: a build is queued only with its task; lost tasks go again."""

from __future__ import annotations

import socket

import pytest
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf

from similarity.models import IndexBuild
from similarity.services.builds import queue as build_queue
from similarity.services.builds.queue import builds_reap, task_in_broker


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when this returns: nothing listens


@pytest.fixture
def broker_down(monkeypatch):
    """django-q2 sends tasks to a Redis on a port where nothing listens."""
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "DJANGO_REDIS", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{closed_port()}/0")


@pytest.fixture
def real_broker(monkeypatch):
    """Tasks go to the configured broker (the database, or Redis) instead of running inline."""
    monkeypatch.setattr(Conf, "SYNC", False)
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


@pytest.mark.django_db(transaction=True)  # no surrounding transaction: as in a request
def test_a_rebuild_with_the_broker_down_answers_503_and_leaves_nothing_queued(
    client, admin_user, broker_down
):
    client.force_login(admin_user)
    for _ in range(2):  # the second request finds nothing queued to join
        response = client.post("/api/index/rebuild/", {"download": False},
                               content_type="application/json")
        assert response.status_code == 503, response.content
        error = response.json()["error"]
        assert error["code"] == "task_queue_unavailable"
        assert "nothing was queued" in error["message"]
    assert not IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).exists()
    failed = IndexBuild.objects.filter(status=IndexBuild.Status.FAILED)
    assert failed.count() == 2
    assert all(b.error.startswith("never queued: the task queue was unreachable")
               for b in failed)


@pytest.mark.django_db(transaction=True)
def test_the_admin_action_says_the_task_queue_is_down(admin_client, broker_down):
    from django.urls import reverse

    from tests.similarity.helpers import make_catalog

    articles = make_catalog(1)
    response = admin_client.post(reverse("admin:catalog_article_changelist"),
                                 {"action": "rebuild_index",
                                  "_selected_action": [articles[0].pk]}, follow=True)
    message = [str(m) for m in response.context["messages"]][-1]
    assert message.startswith("the task queue is unreachable")
    assert not IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).exists()


def stale_queued_build(task_id: str, settings) -> IndexBuild:
    settings.LOOKALIKE = {**settings.LOOKALIKE, "BUILD_STALE_SECONDS": 60}
    build = IndexBuild.objects.create(model="classic", index_type="flat", task_id=task_id)
    IndexBuild.objects.filter(pk=build.pk).update(
        created_at=timezone.now() - timezone.timedelta(seconds=120))
    return build


@pytest.mark.django_db
def test_a_queued_build_whose_task_the_broker_lost_is_sent_again(
    real_broker, settings, monkeypatch
):
    build = stale_queued_build("lost-in-a-redis-restart", settings)
    sent: list[int] = []
    monkeypatch.setattr(build_queue, "_send_task", lambda b: sent.append(b.pk))
    assert not task_in_broker("lost-in-a-redis-restart")
    assert builds_reap().requeued == build.pk
    assert sent == [build.pk]


@pytest.mark.django_db
def test_a_queued_build_whose_task_waits_in_the_broker_is_left_alone(real_broker, settings):
    from django_q.tasks import async_task

    task_id = async_task("similarity.tasks.index_build_task", 0, broker=real_broker)
    assert task_in_broker(task_id)
    build = stale_queued_build(task_id, settings)
    assert builds_reap().requeued is None
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.QUEUED
