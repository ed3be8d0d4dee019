"""Probe and metrics edges: what anonymous callers see, HEAD, and a database that is down."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError, connection
from django.test import Client

from tests.similarity.observability.test_observability import sample

pytestmark = pytest.mark.django_db

BROKER_ERROR = "Error 111 connecting to 10.1.2.3:6380. Connection refused."


@pytest.fixture
def broker_down(monkeypatch):
    import django_q.brokers

    class Unreachable:
        def ping(self) -> bool:
            raise ConnectionError(BROKER_ERROR)

    monkeypatch.setattr(django_q.brokers, "get_broker", Unreachable)


def test_readyz_shows_remote_clients_names_and_ok_only(broker_down, caplog):
    with caplog.at_level(logging.WARNING, logger="similarity.observability"):
        response = Client(REMOTE_ADDR="203.0.113.9").get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    assert body["checks"] == {
        "database": {"ok": True},
        "index": {"ok": True},
        "broker": {"ok": False},
        "queue": {"ok": True, "oldest_queued_build_age_seconds": 0.0},
    }
    assert "10.1.2.3" not in response.content.decode()
    assert BROKER_ERROR in caplog.text  # the details go to the log


def test_readyz_details_for_loopback_and_the_metrics_token(broker_down, settings):
    body = Client(REMOTE_ADDR="127.0.0.1").get("/readyz").json()
    assert BROKER_ERROR in body["checks"]["broker"]["error"]
    settings.METRICS_TOKEN = "s3cret-token"
    remote = Client(REMOTE_ADDR="203.0.113.9")
    body = remote.get("/readyz", HTTP_AUTHORIZATION="Bearer s3cret-token").json()
    assert BROKER_ERROR in body["checks"]["broker"]["error"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_answer_head(client, path):
    response = client.head(path)
    assert response.status_code == 200 and response.content == b""


def test_metrics_export_process_metrics_when_the_database_is_down(client, caplog):
    client.get("/healthz")  # one observed request

    def database_down(execute, sql, params, many, context):
        raise OperationalError("connection to server at 10.1.2.3, port 5432 failed")

    with caplog.at_level(logging.WARNING), connection.execute_wrapper(database_down):
        response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert sample(text, "lookalike_state_up") == 0
    count = "lookalike_http_request_duration_seconds_count"
    assert sample(text, count, route="healthz", method="GET", status="200") >= 1
    assert "lookalike_index_builds" not in text
    assert "database state skipped" in caplog.text
    assert sample(client.get("/metrics").content.decode(), "lookalike_state_up") == 1


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_answer_whatever_the_host(client, path):
    response = client.get(path, HTTP_HOST="10.0.3.7:8000")
    assert response.status_code == 200
    # Other paths keep the Host check.
    assert client.get("/api/index/", HTTP_HOST="10.0.3.7:8000").status_code == 400
