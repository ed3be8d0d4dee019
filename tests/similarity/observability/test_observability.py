"""/healthz, /readyz and /metrics against a real database and a real index."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from catalog.models import Article
from similarity.models import IndexBuild
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def indexed(db) -> list[Article]:
    articles = make_catalog(6)
    index_build_run(model="classic", progress=False)
    return articles


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, or None."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if match and match[1] == name:
            got = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
            if got == wanted:
                return float(match[3])
    return None


def test_healthz_answers_without_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_before_any_build_is_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["checks"]["index"] == {"ok": True, "state": "not built yet"}
    assert body["checks"]["broker"]["ok"] and body["checks"]["database"]["ok"]
    assert body["checks"]["queue"]["oldest_queued_build_age_seconds"] == 0


def test_readyz_reports_the_loaded_index(client, indexed):
    body = client.get("/readyz").json()
    assert body["checks"]["index"]["state"] == "loaded"
    assert body["checks"]["index"]["count"] == 6


def test_readyz_is_503_naming_the_failed_check(client, indexed, data_dir):
    current = data_dir / "index" / "CURRENT"
    assert current.exists()
    current.write_text("no-such-build\n")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["index"]
    assert "missing" in response.json()["checks"]["index"]["error"]


def test_readyz_reports_a_broker_failure(client, monkeypatch):
    import django_q.brokers

    class Unreachable:
        def ping(self) -> bool:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(django_q.brokers, "get_broker", Unreachable)
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failed"] == ["broker"]


def test_metrics_has_latency_by_route_index_builds_and_download_failures(client, indexed):
    client.get("/api/articles/")
    client.get("/api/articles/S0001/similar/")
    client.get("/api/articles/no-such-article/")
    Article.objects.filter(article_id="S0002").update(
        download_status=Article.DownloadStatus.FAILED, download_error="HTTP 404 Not Found"
    )
    Article.objects.filter(article_id="S0003").update(
        download_status=Article.DownloadStatus.FAILED, download_error="timed out after 10s"
    )
    IndexBuild.objects.create(model="classic", index_type="flat")  # queued
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    count = "lookalike_http_request_duration_seconds_count"
    assert sample(text, count, route="api:article-list", method="GET", status="200") >= 1
    assert sample(text, count, route="api:article-detail", method="GET", status="404") >= 1
    assert "no-such-article" not in text  # route names, never raw paths
    assert sample(text, "lookalike_search_duration_seconds_count", kind="article") >= 1
    assert sample(text, "lookalike_index_articles") == 6
    assert 0 <= sample(text, "lookalike_index_age_seconds") < 600
    assert sample(text, "lookalike_index_builds", status="succeeded") == 1
    assert sample(text, "lookalike_index_builds", status="queued") == 1
    assert sample(text, "lookalike_index_build_last_duration_seconds", status="succeeded") >= 0
    assert sample(text, "lookalike_queue_oldest_age_seconds") >= 0
    assert sample(text, "lookalike_download_failures", reason="http_4xx") == 1
    assert sample(text, "lookalike_download_failures", reason="timeout") == 1


def test_metrics_answer_loopback_or_the_token_only(settings):
    remote = Client(REMOTE_ADDR="203.0.113.9")
    assert remote.get("/metrics").status_code == 403
    settings.METRICS_TOKEN = "s3cret-token"
    assert remote.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert remote.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
