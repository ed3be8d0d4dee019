"""A real gunicorn on 127.0.0.1 for tests that need processes: its port read from its log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
BOOTED = re.compile(r"Booting worker with pid")
DEADLINE_SECONDS = 60.0  # start-up takes a few seconds; this only bounds a hang


class WebNode:
    """A gunicorn process on 127.0.0.1 (port chosen by the OS, read from its log), with
    ``workers`` gthread workers; start() returns once all of them have booted."""

    def __init__(self, env: dict[str, str], *, workers: int = 1) -> None:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind",
             "127.0.0.1:0", "--workers", str(workers), "--threads", "4",
             "--worker-class", "gthread"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port: int | None = None
        self.log: list[str] = []
        self._workers = workers
        self._booted = 0
        self._ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(DEADLINE_SECONDS) or self.port is None:
            self.stop()
            raise AssertionError("gunicorn did not start:\n" + "".join(self.log[-40:]))

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
            if BOOTED.search(line):
                self._booted += 1
            if self.port is not None and self._booted >= self._workers:
                self._ready.set()
        self._ready.set()  # the process ended

    def request(self, path: str, *, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or None) of one request."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                         method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, header_map, raw = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, header_map, raw = error.code, dict(error.headers), error.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return status, header_map, payload

    def get(self, path: str) -> tuple[int, dict]:
        status, _headers, payload = self.request(path)
        return status, payload if status == 200 and isinstance(payload, dict) else {}

    def current_build(self) -> str | None:
        status, body = self.get("/api/index/")
        return (body.get("current") or {}).get("name") if status == 200 else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
