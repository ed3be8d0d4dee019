"""The database unreachable: every API path answers a JSON error (503 where it needs the
database), never a 500; a real gunicorn whose database is gone."""

from __future__ import annotations

import json
import os
import socket

import pytest

from tests.liveserver import WebNode

pytestmark = pytest.mark.slow

# Every API route, as a client would call it (anonymous, and with a token where staff-only).
REQUESTS = [
    ("GET", "/api/articles/"),
    ("GET", "/api/articles/A1/"),
    ("GET", "/api/articles/A1/similar/"),
    ("GET", "/api/articles/A1/duplicates/"),
    ("GET", "/api/duplicates/"),
    ("GET", "/api/index/"),
    ("GET", "/api/index/builds/1/"),
    ("POST", "/api/index/rebuild/"),
    ("POST", "/api/similar/"),
    ("POST", "/api/similar/batch/"),
    ("GET", "/api/schema/"),
    ("GET", "/api/docs/"),
    ("GET", "/api/nowhere/"),
]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def unreachable_database(request, tmp_path) -> str:
    if request.param == "sqlite":  # a file in a directory that does not exist
        return f"sqlite:///{tmp_path / 'gone' / 'db.sqlite3'}"
    return f"postgres://postgres@127.0.0.1:{closed_port()}/lookalike"


@pytest.fixture
def server(unreachable_database, tmp_path):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LOOKALIKE_", "DATABASE_", "REDIS_"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="0",
               LOOKALIKE_DATA_DIR=str(tmp_path), DATABASE_URL=unreachable_database,
               SECRET_KEY="test-database-down-not-secret", LOG_LEVEL="ERROR")
    node = WebNode(env)
    yield node
    node.stop()


def accept(path: str) -> str:
    return "text/html" if path == "/api/docs/" else "application/json"  # docs: a page


def test_every_api_path_answers_json_503_when_the_database_is_unreachable(server):
    body = json.dumps({"vector": [0.1, 0.2], "items": [{"article_id": "A1"}]}).encode()
    answers = {}
    for method, path in REQUESTS:
        for headers in ({}, {"Authorization": "Token 0123456789abcdef"}):
            status, response_headers, payload = server.request(
                path, method=method, body=body if method == "POST" else None,
                headers={"Content-Type": "application/json", "Accept": accept(path), **headers})
            answers[(method, path, bool(headers))] = status
            assert status != 500, (method, path, headers, "".join(server.log[-40:]))
            if status >= 400:
                assert response_headers["Content-Type"] == "application/json", (method, path)
                assert set(payload["error"]) >= {"code", "message"}
    # What reads the database says it is unavailable, with a hint when to retry.
    status, headers, payload = server.request("/api/articles/")
    assert status == 503 and payload["error"]["code"] == "database_unavailable"
    assert headers["Retry-After"] == "5"
    assert answers[("POST", "/api/index/rebuild/", True)] == 503  # the token lookup failed
    assert answers[("GET", "/api/index/builds/1/", False)] in (401, 403, 503)
