"""Background builds through django-q2, the broker choice, and Faiss in forked workers."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from django_q.brokers import get_broker
from django_q.models import Task

from similarity.engine.index import build_index, knn_query
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.models import IndexBuild
from similarity.selectors.store import get_store
from similarity.services.builds.queue import index_build_enqueue
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


def test_enqueued_rebuild_runs_as_a_django_q_task(settings, django_capture_on_commit_callbacks):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MODEL": "classic"}
    make_catalog(5)
    with django_capture_on_commit_callbacks(execute=True):
        build = index_build_enqueue(download=False, trigger="test").build
        assert IndexBuild.objects.get(pk=build.pk).status == IndexBuild.Status.QUEUED
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.SUCCEEDED
    assert build.article_count == 5 and build.trigger == "test"
    task = Task.objects.get(id=build.task_id)
    assert task.success and task.result == IndexBuild.Status.SUCCEEDED
    assert get_store().get().index.ntotal == 5


def test_broker_is_redis_when_configured_else_the_database(settings):
    broker = get_broker()
    if settings.REDIS_URL:
        assert type(broker).__name__ == "Redis"
    else:
        assert type(broker).__name__ == "ORM"
    assert broker.ping()


def _search_in_child(index_bytes: bytes, queries: np.ndarray, out) -> None:
    import faiss

    from similarity.engine.index import set_faiss_threads

    set_faiss_threads(fork_safe_threads(2))
    index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
    answers = knn_query(index, queries, 5)
    out.put([a.ids.tolist() for a in answers])


def test_search_in_a_forked_worker_after_parent_used_openmp_does_not_hang():
    """django-q2 forks workers; libgomp hangs a child that reuses the parent's thread pool."""
    import faiss

    from similarity.engine.index import set_faiss_threads

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(20000, dtype=np.int64)
    set_faiss_threads(2)
    mark_openmp_used()
    index = build_index(vectors, ids, threads=2)
    queries = vectors[:64]
    expected = [a.ids.tolist() for a in knn_query(index, queries, 5)]  # parent runs OpenMP
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(
        target=_search_in_child, args=(faiss.serialize_index(index).tobytes(), queries, out)
    )
    child.start()
    child.join(timeout=60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung, "Faiss search in a forked child hung"
    assert child.exitcode == 0
    assert out.get(timeout=5) == expected
