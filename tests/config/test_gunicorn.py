"""`make serve`'s gunicorn settings: a few idle connections do not stop it from answering."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow
ROOT = Path(settings.BASE_DIR)
GUNICORN = Path(sys.executable).parent / "gunicorn"


def test_make_serve_uses_threaded_workers():
    recipe = (ROOT / "Makefile").read_text().split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "gunicorn -c config/gunicorn.py config.wsgi" in recipe
    from config import gunicorn

    assert gunicorn.worker_class == "gthread" and gunicorn.threads >= 4
    assert gunicorn.timeout == 30  # the limit docs and the admin's queued downloads assume


def test_quiet_clients_do_not_block_the_server(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKALIKE_", "DATABASE_"))}
    env.pop("REDIS_URL", None)
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOOKALIKE_DATA_DIR=str(tmp_path),
               SECRET_KEY="test-gunicorn-not-secret", LOG_LEVEL="WARNING")
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(GUNICORN), "-c", str(ROOT / "config" / "gunicorn.py"), "config.wsgi",
         "--bind", f"fd://{listener.fileno()}"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, pass_fds=[listener.fileno()],
    )
    listener.close()
    base = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    try:
        # The socket listens already: this waits in the backlog until a worker is up.
        with urllib.request.urlopen(f"{base}/healthz", timeout=60) as response:
            assert response.status == 200
        # Clients that start a request and go quiet: more than the 2 workers (which stopped
        # sync workers), fewer than the 4 threads of one worker (the other may still be
        # booting). Each holds a thread until it sends or the worker times out: a buffering
        # proxy in front is what absorbs them (docs/operations.md).
        for _ in range(3):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            idle.append(connection)
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        for connection in idle:
            connection.close()
        server.terminate()
        server.wait(timeout=30)
        log.close()
