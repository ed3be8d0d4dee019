"""Distributed builds on one process (django-q2 sync mode): shards, stages, failures, records."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from similarity.models import BuildShard, Embedding, IndexBuild
from similarity.services.builds import index_build_run
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
    assert [(s.first_pk, s.last_pk) for s in shards][0] == (articles[0].pk, articles[3].pk)
    assert {s.state for s in shards} == {BuildShard.State.DONE}
    assert sum(s.done_count for s in shards) == 10 == Embedding.objects.count()
    assert all(s.attempts == 1 and s.worker_pid and s.device == "cpu" for s in shards)
    assert build.embedded_count == 10 and build.article_count == 10
    assert build.manifest["device"] == "cpu"
    assert build.manifest["distributed"] == {"shards": 3, "workers": 1}
    assert build.timings["distributed"]["shards"] == 3
