"""Two real web nodes (gunicorn) with their own data dirs, one database and one shared
storage directory: a newly published build reaches both with no failed request meanwhile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.liveserver import DEADLINE_SECONDS, REPO, WebNode

ARTICLE = "S0003"

pytestmark = pytest.mark.skipif(shutil.which("gunicorn", path=Path(sys.executable).parent)
                                is None, reason="gunicorn is not installed in this venv")


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database every process shares: the PostgreSQL test database (rows flushed after
    the test) or, on SQLite, a file migrated for this test (the suite's own is in memory)."""
    if connection.vendor == "postgresql":
        request.getfixturevalue("transactional_db")
        db = connection.settings_dict
        return (f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}")
    return f"sqlite:///{tmp_path / 'shared.sqlite3'}"


@pytest.fixture
def node_env(tmp_path: Path, database_url: str) -> Callable[[str], dict[str, str]]:
    """The environment of a node named ``name``: its own data dir, the shared rest."""

    def env(name: str) -> dict[str, str]:
        data = tmp_path / name
        data.mkdir(exist_ok=True)
        return {
            **os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "0",
            "LOOKALIKE_DATA_DIR": str(data), "DATABASE_URL": database_url,
            "LOOKALIKE_STORAGE_DIR": str(tmp_path / "shared"), "LOOKALIKE_MODEL": "classic",
            "LOOKALIKE_SERVE_MEDIA": "0", "LOG_LEVEL": "WARNING",
        }

    return env


@pytest.fixture
def nodes(node_env) -> Iterator[list[WebNode]]:
    started: list[WebNode] = []
    try:
        for name in ("web1", "web2"):
            started.append(WebNode(node_env(name)))
        yield started
    finally:
        for node in started:
            node.stop()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.05)


class Hammer(threading.Thread):
    """Asks one node for an article's neighbors in a loop; records every answer."""

    def __init__(self, node: WebNode) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.answers: list[tuple[int, str | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            status, body = self.node.get(f"/api/articles/{ARTICLE}/similar/?k=3")
            self.answers.append((status, body.get("index_build")))


def stored_builds(tmp_path: Path) -> set[str]:
    builds = tmp_path / "shared" / "index" / "builds"
    return {p.name for p in builds.iterdir()} if builds.is_dir() else set()


def test_a_published_build_reaches_both_web_nodes_without_a_failed_request(
    tmp_path: Path, node_env, request: pytest.FixtureRequest
) -> None:
    builder = node_env("builder")
    if connection.vendor != "postgresql":
        _manage(builder, "migrate", "-v0")
    catalog = "from tests.similarity.helpers import make_catalog; make_catalog({n}, start={s})"
    _manage(builder, "shell", "-c", catalog.format(n=8, s=0))
    _manage(builder, "build_index", "--no-progress")
    (first,) = stored_builds(tmp_path)

    web1, web2 = request.getfixturevalue("nodes")
    wait_for(lambda: web1.current_build() == first and web2.current_build() == first,
             f"both nodes to serve {first}")
    hammers = [Hammer(web1), Hammer(web2)]
    for hammer in hammers:
        hammer.start()
    try:
        _manage(builder, "shell", "-c", catalog.format(n=4, s=8))
        _manage(builder, "build_index", "--no-progress")  # incremental: a new build name
        (second,) = stored_builds(tmp_path) - {first}
        wait_for(lambda: web1.current_build() == second and web2.current_build() == second,
                 f"both nodes to serve {second}")
        seen = [len(h.answers) for h in hammers]
        wait_for(lambda: all(len(h.answers) > n + 20 for h, n in zip(hammers, seen, strict=True)),
                 "more answers after the switch")
    finally:
        for hammer in hammers:
            hammer.stopping.set()
        for hammer in hammers:
            hammer.join(15)

    for hammer in hammers:
        statuses = {status for status, _ in hammer.answers}
        assert statuses == {200}, (statuses, "".join(hammer.node.log[-40:]))
        served = [build for _, build in hammer.answers]
        assert served[0] == first and served[-1] == second
        switch = served.index(second)
        assert set(served[:switch]) == {first} and set(served[switch:]) == {second}  # no flapping
    for name in ("web1", "web2"):
        assert (tmp_path / name / "index-cache" / second / "manifest.json").is_file()
        assert not (tmp_path / name / "index").exists()  # served from the cache, never built
