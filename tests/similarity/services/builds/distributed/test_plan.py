"""Distributed builds on one process (django-q2 sync mode): shards, stages, failures, records."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from similarity.models import BuildShard, Embedding, IndexBuild
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_shards(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MODEL": "classic", "SHARD_SIZE": 4}


def test_build_index_distributed_embeds_every_article_once_in_shards(small_shards):
    articles = make_catalog(10)
    out = StringIO()
    call_command("build_index", "--distributed", "--no-progress", stdout=out)
    build = IndexBuild.objects.get()
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    assert f"Build #{build.pk} succeeded" in out.getvalue()
    shards = list(build.shards.order_by("first_pk"))
    assert [s.article_count for s in shards] == [4, 4, 2]
    assert (shards[0].first_pk, shards[0].last_pk) == (articles[0].pk, articles[3].pk)
    assert {s.state for s in shards} == {BuildShard.State.DONE}
    assert sum(s.done_count for s in shards) == 10 == Embedding.objects.count()
    assert all(s.attempts == 1 and s.worker_pid and s.device == "cpu" for s in shards)
    assert build.embedded_count == 10 and build.article_count == 10
    assert build.manifest["device"] == "cpu"
    assert build.manifest["distributed"] == {"shards": 3, "workers": 1}
    assert build.timings["distributed"]["shards"] == 3


def test_rebuild_requests_fan_out_when_the_setting_is_on(
    small_shards, settings, admin_client, django_capture_on_commit_callbacks
):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DISTRIBUTED_BUILDS": True}
    make_catalog(6)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/api/index/rebuild/", {"download": False})
    assert response.status_code == 202
    build = IndexBuild.objects.get()
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    detail = admin_client.get(f"/api/index/builds/{build.pk}/").json()
    assert [(s["kind"], s["state"], s["article_count"]) for s in detail["shards"]] == [
        ("embed", "done", 4), ("embed", "done", 2)
    ]
    shard = detail["shards"][0]
    pid = BuildShard.objects.first().worker_pid
    assert shard["attempts"] == 1 and shard["worker"].endswith(f":{pid}")
    assert shard["done_count"] == 4 and shard["device"] == "cpu" and shard["duration"] >= 0
    page = admin_client.get(f"/admin/similarity/indexbuild/{build.pk}/change/")
    assert page.status_code == 200
    assert b"Build shards" in page.content and shard["worker"].encode() in page.content


def test_embed_shards_go_to_the_embed_cluster_and_the_finish_to_the_default(
    small_shards, settings, monkeypatch
):
    from django_q import tasks

    settings.LOOKALIKE = {**settings.LOOKALIKE, "EMBED_CLUSTER": "embed"}
    sent = []
    real = tasks.async_task
    monkeypatch.setattr(
        tasks, "async_task",
        lambda func, *args, **kw: sent.append((func, kw.get("cluster"))) or real(func, *args, **kw),
    )
    make_catalog(6)
    build = index_build_run(distributed=True, progress=False)
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    assert sent == [
        ("similarity.tasks.build_shard_task", "embed"),
        ("similarity.tasks.build_finish_task", "lookalike"),  # named: not the sender's queue
        ("similarity.tasks.build_shard_task", "embed"),
    ]  # sync mode: the first task runs both shards (stealing), the second finds none


def test_a_device_this_machine_lacks_fails_the_build_clearly(small_shards, settings):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DEVICE": "cuda"}
    make_catalog(3)
    with pytest.raises(Exception, match="DEVICE is 'cuda' but CUDA is not available here"):
        index_build_run(distributed=True, progress=False)
    build = IndexBuild.objects.get()
    assert build.status == IndexBuild.Status.FAILED
    assert "LOOKALIKE_DEVICE=cpu" in build.error and not build.shards.exists()
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DEVICE": "tpu"}
    with pytest.raises(Exception, match="DEVICE must be cpu, cuda or cuda:<n>; got 'tpu'"):
        index_build_run(progress=False)


def test_a_shard_that_raises_fails_the_build_with_its_worker_and_range(small_shards, monkeypatch):
    from similarity.services.builds.distributed import worker as shard_work

    make_catalog(6)
    monkeypatch.setattr(shard_work, "_embed", lambda shard, model: 1 / 0)
    build = index_build_run(distributed=True, progress=False)
    assert build.status == IndexBuild.Status.FAILED
    shard = build.shards.get(state=BuildShard.State.FAILED)
    assert f"embed shard #{shard.pk} (articles {shard.first_pk}-{shard.last_pk}) failed on " in (
        build.error
    )
    assert "ZeroDivisionError" in build.error and shard.error == build.error
    assert build.shards.filter(state=BuildShard.State.PENDING).count() == 1  # never started


def test_downloads_are_shards_too_then_embeddings(small_shards, loopback):
    import io

    from catalog.models import Article
    from demo.sample_images import product_image

    make_catalog(2)  # downloaded already
    for seed in range(2, 7):
        buffer = io.BytesIO()
        product_image(seed, size=64).save(buffer, "JPEG")
        url = loopback.add(f"/{seed}.jpg", buffer.getvalue())
        Article.objects.create(article_id=f"D{seed}", title="d", image_url=url)
    build = index_build_run(distributed=True, download=True, progress=False)
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    downloads = build.shards.filter(kind=BuildShard.Kind.DOWNLOAD)
    assert [s.article_count for s in downloads] == [4, 1]
    assert sum(s.done_count for s in downloads) == 5 == build.timings["distributed"]["downloaded"]
    assert build.article_count == 7 == Embedding.objects.count()
    assert sum(s.done_count for s in build.shards.filter(kind=BuildShard.Kind.EMBED)) == 7


def test_the_reaper_resends_the_task_of_an_expired_shard(small_shards, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone
    from django_q import tasks

    from similarity.services.builds.queue import builds_reap

    make_catalog(6)
    lost = []
    monkeypatch.setattr(tasks, "async_task", lambda *args, **kw: lost.append(args))  # lost
    build = index_build_run(distributed=True, wait=False, progress=False)
    assert build.status == IndexBuild.Status.RUNNING and build.phase == "embed shards"
    assert len(lost) == 2
    monkeypatch.undo()
    assert "nothing to do" in str(builds_reap())  # tasks may just be queued: not yet
    BuildShard.objects.update(enqueued_at=timezone.now() - timedelta(seconds=200))
    report = builds_reap()  # nobody holds a lease, the tasks are old: sent again (sync: run)
    assert report.resent == 2 and "2 shard task(s) of distributed builds sent again" in str(report)
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error


def test_ctrl_c_while_waiting_leaves_the_build_to_its_workers(small_shards, monkeypatch):
    from django.core.management.base import CommandError
    from django_q import tasks

    from similarity.services.builds import runs as builds

    make_catalog(3)
    monkeypatch.setattr(tasks, "async_task", lambda *args, **kw: None)  # workers elsewhere

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builds, "distributed_build_wait", interrupted)
    with pytest.raises(CommandError, match=r"stopped waiting: build #\d+ goes on in the"):
        call_command("build_index", "--distributed", "--no-progress", stdout=StringIO())
    build = IndexBuild.objects.get()
    assert build.status == IndexBuild.Status.RUNNING and build.phase == "embed shards"
    assert build.shards.filter(state=BuildShard.State.PENDING).count() == 1


def test_a_worker_with_other_weights_fails_the_build_instead_of_mixing_vectors(
    small_shards, monkeypatch
):
    from similarity.services.builds.distributed import shards

    real_plan = shards.shards_plan

    def planned_elsewhere(**kwargs):
        return real_plan(**{**kwargs, "options": {**kwargs["options"], "identity": "classic@x"}})

    monkeypatch.setattr(
        "similarity.services.builds.distributed.plan.shards_plan", planned_elsewhere
    )
    make_catalog(3)
    build = index_build_run(distributed=True, progress=False)
    assert build.status == IndexBuild.Status.FAILED
    assert "loads other weights for 'classic'" in build.error and "(classic@x)" in build.error
    assert not Embedding.objects.exists()


@pytest.mark.parametrize(
    ("articles", "workers", "cap", "size"),
    [
        (81, 4, 1000, 21),  # a small catalog still fans out to every live worker
        (81, 0, 1000, 81),  # nobody alive yet: one shard (it waits for a worker)
        (10_000, 4, 1000, 1000),  # a large one in shards of at most SHARD_SIZE
        (3, 8, 1000, 1),
        (0, 2, 1000, 1),
    ],
)
def test_shard_size_follows_the_catalog_and_the_live_workers(articles, workers, cap, size):
    from similarity.services.builds.distributed.plan import shard_size_for

    assert shard_size_for(articles=articles, workers=workers, cap=cap) == size


def test_no_cluster_alive_counts_no_workers():
    from similarity.services.builds.distributed.plan import live_workers

    assert live_workers() == 0  # the tests run no qcluster
