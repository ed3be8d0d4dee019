"""Operations, as a shop runs them: real manage.py processes on a SQLite file.

A build killed with SIGKILL, and the nightly cron recipe (scripts/nightly-refresh.sh) with a
feed that has a bad row and a dead image URL. The processes share a migrated database file
with this test, which reads it with sqlite3; their images come from a loopback server.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings

from demo.loopback import LoopbackServer
from demo.sample_images import product_image

pytestmark = pytest.mark.slow
MANAGE = str(Path(settings.BASE_DIR) / "manage.py")


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    product_image(seed, size=64).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied by each test (migrating takes seconds)."""
    root = tmp_path_factory.mktemp("migrated")
    env = process_env(root, root / "db.sqlite3")
    subprocess.run([sys.executable, MANAGE, "migrate", "--noinput"], env=env, check=True,
                   capture_output=True, timeout=300)
    return root / "db.sqlite3"


def process_env(data_dir: Path, database: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOKALIKE_", "DATABASE_"))}
    env.pop("REDIS_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{database}",
        LOOKALIKE_DATA_DIR=str(data_dir),
        SECRET_KEY="test-operations-not-secret",
        LOOKALIKE_DOWNLOAD_ALLOW_PRIVATE="1",  # the loopback image server
        LOOKALIKE_DOWNLOAD_RETRIES="0",
        LOG_LEVEL="WARNING",
        **extra,
    )
    return env


@pytest.fixture
def site(tmp_path: Path, migrated: Path) -> Iterator[tuple[Path, Path]]:
    data_dir = tmp_path / "site"
    data_dir.mkdir()
    database = data_dir / "db.sqlite3"
    shutil.copy(migrated, database)
    yield data_dir, database


def query(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(database, timeout=30) as connection:
        return connection.execute(sql).fetchall()


def write_feed(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["article_id", "image_url", "title"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, MANAGE, *args], env=env, capture_output=True,
                          text=True, timeout=300)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_build_killed_with_sigkill_is_taken_over_after_the_stale_time(site):
    data_dir, database = site
    requested, release = threading.Event(), threading.Event()

    def stalled_image(handler) -> None:  # holds the build in its download step
        requested.set()
        release.wait(timeout=120)
        body = jpeg(99)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with LoopbackServer() as server:
        rows = [{"article_id": f"A{i}", "image_url": server.add(f"/{i}.jpg", jpeg(i)),
                 "title": f"A {i}"} for i in range(3)]
        rows.append({"article_id": "STALL", "image_url": server.add("/stall.jpg", stalled_image),
                     "title": "stall"})
        env = process_env(data_dir, database, LOOKALIKE_BUILD_STALE_SECONDS="2")
        imported = manage(env, "import_catalog", str(write_feed(data_dir / "feed.csv", rows)))
        assert imported.returncode == 0, imported.stderr

        killed = subprocess.Popen(
            [sys.executable, MANAGE, "build_index", "--download", "--model", "classic"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            assert requested.wait(timeout=120), "the build never reached its download step"
            [(build_id, status)] = query(database, "SELECT id, status FROM similarity_indexbuild")
            assert status == "running"
            killed.send_signal(signal.SIGKILL)
            assert killed.wait(timeout=30) == -signal.SIGKILL
        finally:
            release.set()
            if killed.poll() is None:
                killed.kill()

        # With the default stale time the dead build still holds the lock...
        refused = manage({**env, "LOOKALIKE_BUILD_STALE_SECONDS": "900"},
                         "build_index", "--model", "classic", "--no-progress")
        assert refused.returncode == 1
        assert f"another index build is running (#{build_id})" in refused.stderr

        # ... with a short one, the next request takes over once it has passed.
        [(beat, moved)] = query(database, "SELECT heartbeat_at, progress_at FROM "
                                f"similarity_indexbuild WHERE id = {build_id}")
        last_sign = max(parse_time(beat), parse_time(moved))
        stale = 1.0
        waited = threading.Event()
        while (datetime.now(UTC) - last_sign).total_seconds() <= stale + 0.2:
            waited.wait(0.05)  # a condition on the clock: the stale time must have passed
        takeover = manage({**env, "LOOKALIKE_BUILD_STALE_SECONDS": "1"},
                          "build_index", "--download", "--model", "classic", "--no-progress")
    assert takeover.returncode == 0, takeover.stderr
    assert "succeeded (full): 4 articles indexed" in takeover.stdout
    [(status, error)] = query(database, "SELECT status, error FROM similarity_indexbuild "
                              f"WHERE id = {build_id}")
    assert status == "failed"
    assert error.startswith("abandoned: its process stopped sending heartbeats")
    assert (data_dir / "index" / "CURRENT").exists()


def test_the_nightly_recipe_goes_on_after_partial_failures_and_stops_on_unusable_input(site):
    data_dir, database = site
    script = Path(settings.BASE_DIR) / "scripts" / "nightly-refresh.sh"
    env = process_env(data_dir, database, LOOKALIKE_PYTHON=sys.executable,
                      LOOKALIKE_MODEL="classic")
    with LoopbackServer() as server:
        rows = [{"article_id": f"N{i}", "image_url": server.add(f"/{i}.jpg", jpeg(i)),
                 "title": f"N {i}"} for i in range(4)]
        rows.append({"article_id": "DEAD", "image_url": server.url("/gone.jpg"), "title": "x"})
        rows.append({"article_id": "BAD ROW", "image_url": "", "title": "no image URL"})
        feed = write_feed(data_dir / "feed.csv", rows)
        run = subprocess.run(["sh", str(script), str(feed)], env=env, capture_output=True,
                             text=True, timeout=600)
    assert run.returncode == 2, run.stderr  # done, with a skipped row and a failed image
    assert "1 row(s) skipped" in run.stderr  # import exited 2: the chain went on
    # download exited 2 and the chain went on: the failed download was retried once
    # (download_images --only-failed, exit 2 again), then the index was built.
    assert run.stderr.count("1 download(s) failed") == 2
    assert query(database, "SELECT download_attempts FROM catalog_article "
                 "WHERE article_id = 'DEAD'") == [(2,)]
    assert "4 articles indexed" in run.stdout  # build_index ran and exited 0
    assert (data_dir / "index" / "CURRENT").exists()
    assert query(database, "SELECT status FROM similarity_indexbuild") == [("succeeded",)]

    missing = subprocess.run(["sh", str(script), str(data_dir / "no-such-feed.csv")], env=env,
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1
    assert "manage.py import_catalog failed (exit 1); later steps not run" in missing.stderr
    assert query(database, "SELECT count(*) FROM similarity_indexbuild") == [(1,)]  # no build
