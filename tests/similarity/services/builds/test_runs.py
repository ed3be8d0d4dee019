"""Index builds end to end with the classic embedder: full, incremental, unchanged, failures."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from catalog.models import Article
from demo.sample_images import product_image
from similarity.conf import similarity_settings
from similarity.engine.index import current_build, knn_query, load_index, read_members
from similarity.errors import BuildAlreadyRunning, BuildFailed
from similarity.models import Embedding, IndexBuild
from similarity.services.builds.queue import index_build_create
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog, store_image

pytestmark = pytest.mark.django_db


def build(**kwargs) -> IndexBuild:
    return index_build_run(model="classic", progress=False, **kwargs)


def index_bytes() -> bytes:
    info = current_build(similarity_settings().index_root)
    return (info.path / "index.faiss").read_bytes()


def test_full_build_indexes_every_downloaded_article():
    articles = make_catalog(12)
    Article.objects.create(article_id="PENDING", image_url="http://127.0.0.1:9/x.jpg")
    result = build()
    assert result.status == IndexBuild.Status.SUCCEEDED
    assert (result.mode, result.article_count, result.embedded_count) == ("full", 12, 12)
    assert Embedding.objects.count() == 12
    info = current_build(similarity_settings().index_root)
    assert info.manifest.count == 12
    assert info.manifest.model == "classic"
    assert result.manifest == info.manifest.to_dict()  # the row records the file
    members = read_members(info.path)
    assert sorted(members[:, 0].tolist()) == sorted(a.pk for a in articles)
    for phase in ("embed_seconds", "index_seconds", "write_seconds", "total_seconds"):
        assert phase in result.timings


def test_every_article_finds_itself_first_and_exact_search_matches_numpy():
    make_catalog(20)
    build()
    info = current_build(similarity_settings().index_root)
    index = load_index(info.path)
    rows = Embedding.objects.order_by("article_id").values_list("article_id", "vector")
    ids = np.array([pk for pk, _ in rows], dtype=np.int64)
    vectors = np.stack([np.frombuffer(bytes(v), dtype="<f4") for _, v in rows])
    answers = knn_query(index, vectors, 5)
    scores = vectors @ vectors.T
    for row, answer in enumerate(answers):
        assert answer.ids[0] == ids[row]
        assert answer.distances[0] < 1e-5
        expected = ids[np.argsort(-scores[row], kind="stable")[:5]]
        assert set(answer.ids.tolist()) == set(expected.tolist())
        np.testing.assert_allclose(
            answer.distances, np.sort(1 - scores[row])[:5], atol=1e-5
        )


def test_rebuild_with_same_inputs_is_unchanged_and_deterministic():
    make_catalog(8)
    build()
    first = index_bytes()
    again = build()
    assert again.status == IndexBuild.Status.UNCHANGED
    assert again.embedded_count == 0 and again.reused_count == 8
    full = build(full=True)
    assert full.status == IndexBuild.Status.SUCCEEDED and full.mode == "full"
    assert index_bytes() == first


def test_incremental_add_change_and_deactivate_without_reembedding_the_rest():
    articles = make_catalog(10)
    build()
    new = make_catalog(2, start=100)
    store_image(articles[0], product_image(500, size=96))  # changed photo
    Article.objects.filter(pk=articles[1].pk).update(is_active=False)
    result = build()
    assert result.mode == "incremental"
    assert result.embedded_count == 3  # two new + one changed, the rest reused
    assert (result.added_count, result.removed_count) == (3, 2)
    assert result.article_count == 11
    incremental = index_bytes()
    full = build(full=True)
    assert full.mode == "full"
    assert index_bytes() == incremental  # flat: incremental == fresh build, byte for byte
    members = read_members(current_build(similarity_settings().index_root).path)
    assert articles[1].pk not in members[:, 0]
    assert {a.pk for a in new} <= set(members[:, 0].tolist())


def test_broken_image_is_skipped_with_reason_and_the_build_goes_on():
    articles = make_catalog(5)
    Path(articles[2].image.path).write_bytes(b"not a jpeg at all")
    result = build()
    assert result.status == IndexBuild.Status.SUCCEEDED
    assert result.article_count == 4 and result.failed_count == 1
    assert result.failures[0]["article_id"] == articles[2].article_id


def test_nothing_to_index_fails_clearly_and_keeps_previous_index():
    with pytest.raises(BuildFailed, match="nothing to index"):
        build()
    failed = IndexBuild.objects.get()
    assert failed.status == IndexBuild.Status.FAILED
    assert "nothing to index" in failed.error


def test_failed_build_leaves_the_current_index_serving(monkeypatch):
    make_catalog(6)
    build()
    before = current_build(similarity_settings().index_root).name
    make_catalog(2, start=50)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("similarity.services.indexing.update.write_build", explode)
    with pytest.raises(OSError, match="disk full"):
        build()
    assert current_build(similarity_settings().index_root).name == before
    assert IndexBuild.objects.first().error == "OSError: disk full"


def test_single_flight_lock_refuses_a_second_running_build():
    make_catalog(3)
    running = index_build_create(model="classic")
    IndexBuild.objects.filter(pk=running.pk).update(status=IndexBuild.Status.RUNNING)
    with pytest.raises(BuildAlreadyRunning, match=f"#{running.pk}"):
        build()
    assert IndexBuild.objects.filter(status=IndexBuild.Status.SKIPPED).count() == 1


def test_abandoned_running_build_is_taken_over(settings):
    from django.utils import timezone

    make_catalog(3)
    stale = index_build_create(model="classic")
    IndexBuild.objects.filter(pk=stale.pk).update(
        status=IndexBuild.Status.RUNNING,
        heartbeat_at=timezone.now() - timezone.timedelta(hours=2),
    )
    assert build().status == IndexBuild.Status.SUCCEEDED
    stale.refresh_from_db()
    assert stale.status == IndexBuild.Status.FAILED and "abandoned" in stale.error


def test_approximate_index_reports_recall():
    make_catalog(40)
    result = build(index_type="IVF4,Flat")
    assert result.recall_at_10 is not None and 0.0 < result.recall_at_10 <= 1.0
    assert current_build(similarity_settings().index_root).manifest.factory == "IVF4,Flat"


def test_unknown_model_fails_with_one_line(tmp_path):
    make_catalog(2)
    with pytest.raises(BuildFailed) as excinfo:
        index_build_run(model=str(tmp_path / "no-such-model"), progress=False)
    assert "\n" not in str(excinfo.value)


def test_build_index_command(tmp_path):
    make_catalog(4)
    out = StringIO()
    call_command("build_index", "--model", "classic", "--no-progress", stdout=out)
    assert "succeeded (full): 4 articles indexed, 4 embedded" in out.getvalue()
    with pytest.raises(CommandError, match="--batch-size must be >= 1"):
        call_command("build_index", "--batch-size", "0")
    Article.objects.all().delete()
    with pytest.raises(CommandError, match="nothing to index"):
        call_command("build_index", "--model", "classic", "--no-progress")


def test_member_changes_finds_removed_added_and_changed_ids():
    from similarity.services.indexing.update import member_changes

    old_ids = np.array([1, 2, 3, 5], dtype=np.int64)
    old_emb = np.array([10, 20, 30, 50], dtype=np.int64)
    new_ids = np.array([2, 3, 4, 5], dtype=np.int64)
    new_emb = np.array([20, 31, 40, 50], dtype=np.int64)
    gone, fresh = member_changes(old_ids, old_emb, new_ids, new_emb)
    assert gone.tolist() == [1, 3]  # 1 removed, 3 re-embedded
    assert fresh.tolist() == [3, 4]  # 3 re-embedded, 4 new


@pytest.mark.django_db(transaction=True)
def test_heartbeat_thread_beats_for_a_running_build():
    import time

    from django.utils import timezone

    from similarity.services.builds.lock import Heartbeat

    build = index_build_create(model="classic")
    old = timezone.now() - timezone.timedelta(hours=1)
    IndexBuild.objects.filter(pk=build.pk).update(
        status=IndexBuild.Status.RUNNING, heartbeat_at=old
    )
    with Heartbeat(build.pk, interval=0.02):
        deadline = time.monotonic() + 10
        while IndexBuild.objects.get(pk=build.pk).heartbeat_at == old:
            assert time.monotonic() < deadline, "no heartbeat within 10 s"
            time.sleep(0.01)
    assert IndexBuild.objects.get(pk=build.pk).heartbeat_at > old


def test_finish_keeps_a_takeover_by_another_process():
    from similarity.services.builds.runs import _finish

    build = index_build_create(model="classic")
    IndexBuild.objects.filter(pk=build.pk).update(
        status=IndexBuild.Status.FAILED, error="abandoned: its process stopped sending heartbeats"
    )
    build.status = IndexBuild.Status.SUCCEEDED
    _finish(build)
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.FAILED and "abandoned" in build.error


def test_finish_does_not_overwrite_the_task_id():
    make_catalog(2)
    build = index_build_create(model="classic")
    IndexBuild.objects.filter(pk=build.pk).update(task_id="abc123")
    index_build_run(build=build, progress=False)
    build.refresh_from_db()
    assert build.task_id == "abc123" and build.status == IndexBuild.Status.SUCCEEDED


def test_reembed_replaces_every_vector_and_keeps_the_index_identical():
    make_catalog(6)
    build()
    before = set(Embedding.objects.values_list("pk", flat=True))
    first = index_bytes()
    result = build(reembed=True, full=True)
    assert result.embedded_count == 6 and result.reused_count == 0
    assert Embedding.objects.count() == 6
    assert not before & set(Embedding.objects.values_list("pk", flat=True))  # all new rows
    assert index_bytes() == first  # same model, same images: same vectors, same index


def test_sharded_embed_workers_split_the_catalog_and_the_build_reuses_them():
    make_catalog(9)
    outputs = []
    for shard in ("0/3", "1/3", "2/3"):
        out = StringIO()
        call_command("embed_images", "--model", "classic", "--shard", shard, "--no-progress",
                     stdout=out)
        outputs.append(out.getvalue())
    embedded = [int(text.split()[0]) for text in outputs]
    assert sum(embedded) == 9 and all(count > 0 for count in embedded)
    assert Embedding.objects.count() == 9
    result = build()
    assert (result.embedded_count, result.reused_count, result.article_count) == (0, 9, 9)
    with pytest.raises(CommandError, match="--shard must be i/n"):
        call_command("embed_images", "--shard", "3/3")
