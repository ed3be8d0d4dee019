"""A match_images process killed (SIGKILL) mid-run resumes without fetching written rows again."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from demo.loopback import LoopbackServer, Route
from demo.sample_images import product_jpeg

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[4]
ROWS = 10
# Batches of 2, the next one fetched while one is embedded and written: batch 4 (photos 7
# and 8) starts once batch 3's photos are in, i.e. after batches 1 and 2 were written. The
# 7th photo's server hangs until the process is killed.
BLOCKED = 7


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), *args]


def _catalog_indexed(server: LoopbackServer, tmp_path: Path, env: dict[str, str]) -> None:
    """A catalog of ROWS articles imported, downloaded and indexed by the real commands."""
    subprocess.run(_manage("migrate", "-v0"), env=env, check=True, cwd=REPO)
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("article_id,image_url\n" + "".join(
        f"A{seed},{server.add(f'/catalog/{seed}.jpg', product_jpeg(seed, size=160))}\n"
        for seed in range(1, ROWS + 1)))
    subprocess.run(_manage("import_catalog", str(catalog), "-v0"), env=env, check=True, cwd=REPO)
    subprocess.run(_manage("build_index", "--download", "--no-progress", "-v0"), env=env,
                   check=True, cwd=REPO, capture_output=True)


def test_killed_run_resumes_without_refetching(tmp_path: Path) -> None:
    data = tmp_path / "killed"
    data.mkdir()
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOOKALIKE_DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
        "LOOKALIKE_DOWNLOAD_ALLOW_PRIVATE": "1", "LOOKALIKE_MODEL": "classic",
    }
    entered, release = threading.Event(), threading.Event()
    blocked_body = product_jpeg(BLOCKED, size=200)

    def hang(request: BaseHTTPRequestHandler) -> None:
        entered.set()
        release.wait(60)
        try:
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Content-Length", str(len(blocked_body)))
            request.end_headers()
            request.wfile.write(blocked_body)
        except OSError:
            return

    run = subprocess.run
    with LoopbackServer() as server:
        _catalog_indexed(server, tmp_path, env)

        feed = tmp_path / "feed.csv"
        paths = {seed: f"/supplier/{seed}.jpg" for seed in range(1, ROWS + 1)}
        for seed, path in paths.items():
            server.add(path, hang if seed == BLOCKED else Route(product_jpeg(seed, size=220)))
        feed.write_text("supplier_ref,image_url\n" + "".join(
            f"S{seed},{server.url(path)}\n" for seed, path in paths.items()))
        report = tmp_path / "report.csv"
        command = _manage("match_images", str(feed), "--output", str(report),
                          "--batch-size", "2", "--workers", "2", "--no-progress")

        killed = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            assert entered.wait(60), "the run never reached the 7th photo"
            killed.send_signal(signal.SIGKILL)
            killed.wait(30)
        finally:
            if killed.poll() is None:
                killed.kill()
            release.set()
        assert killed.returncode == -signal.SIGKILL
        written = [row["supplier_ref"] for row in csv.DictReader(report.open())]
        # Batches 1 and 2 surely, batch 3 perhaps: whole lines, flushed one by one.
        assert written in (["S1", "S2", "S3", "S4"], ["S1", "S2", "S3", "S4", "S5", "S6"])
        before = dict(server.hits)

        server.add(paths[BLOCKED], product_jpeg(BLOCKED, size=220))
        finished = run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)

    assert finished.returncode == 0, finished.stderr
    assert f"{len(written)} already in the report" in finished.stdout
    for ref in written:
        path = paths[int(ref[1:])]
        assert server.hits[path] == before[path] == 1  # never fetched again
    rows = list(csv.DictReader(report.open()))
    assert [row["supplier_ref"] for row in rows] == [f"S{seed}" for seed in range(1, ROWS + 1)]
    assert all(row["verdict"] == "same" and row["match_1"] == f"A{row['supplier_ref'][1:]}"
               for row in rows), rows
