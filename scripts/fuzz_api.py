#!/usr/bin/env python
"""Schema-driven API fuzzing (schemathesis) against a live gunicorn on 127.0.0.1.

Sets up a throwaway data dir (and, on PostgreSQL, a throwaway database next to DATABASE_URL's),
imports the generated evaluation catalog, builds a classic-model index, starts gunicorn on a
free loopback port, runs schemathesis as a staff user and anonymously, stops the server and
exits non-zero on any finding. Usage: scripts/fuzz_api.py [--max-examples N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)
READY_TIMEOUT = 60.0
FUZZ_TIMEOUT = 150  # seconds per schemathesis run; the whole script stays well under 3 min


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=20261129, help="fixed: CI is reproducible")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lookalike-fuzz-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOOKALIKE_DATA_DIR": str(tmp / "data"),
        "LOOKALIKE_DOWNLOAD_ALLOW_PRIVATE": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
        "HF_HUB_OFFLINE": "1",
    }
    (tmp / "prometheus").mkdir()
    database = env.get("DATABASE_URL", "")
    fuzz_database = _postgres_create(database) if database.startswith("postgres") else ""
    if fuzz_database:
        env["DATABASE_URL"] = fuzz_database
    server: subprocess.Popen[bytes] | None = None
    failed = True
    try:
        token = _prepare(env, tmp)
        server, base = _serve(env, tmp)
        schema = f"{base}/api/schema/?format=json"
        staff = _fuzz(schema, ["-H", f"Authorization: Token {token}"], args, tmp, label="staff")
        anonymous = _fuzz(schema, [], args, tmp, label="anonymous")
        observed = _metrics_observed(base)
        failed = not (staff and anonymous and observed)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if failed:
            log = tmp / "gunicorn.log"
            if log.exists():
                print("--- gunicorn log ---\n" + log.read_text()[-5000:], file=sys.stderr)
        if env.get("REDIS_URL"):
            # The fuzzed rebuilds queued tasks for builds of the throwaway database.
            _manage(env, "shell", "-v", "0", "-c",
                    "from django_q.brokers import get_broker; get_broker().purge_queue()")
        if fuzz_database:
            _postgres_drop(fuzz_database)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("fuzz: " + ("FINDINGS (see above)" if failed else "no findings"))
    return 1 if failed else 0


def _manage(env: dict[str, str], *argv: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *argv],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        sys.exit(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _prepare(env: dict[str, str], tmp: Path) -> str:
    """A migrated database with the evaluation catalog, a classic index and a staff token."""
    started = time.monotonic()
    _manage(env, "migrate", "--noinput", "-v", "0")
    _manage(env, "demo_evalset", "--write", str(tmp / "evalset"))
    _manage(env, "demo_evalset", "--import", str(tmp / "evalset"))
    _manage(env, "build_index", "--model", "classic")
    token = _manage(env, "shell", "-v", "0", "-c", (
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "user = get_user_model().objects.create_user('fuzz', is_staff=True)\n"
        "print(Token.objects.create(user=user).key)"
    )).strip().splitlines()[-1]
    print(f"fuzz: catalog imported and index built in {time.monotonic() - started:.1f} s")
    return token


def _serve(env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn on a socket bound here to 127.0.0.1:0 (no port race), once /readyz says 200."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    log = (tmp / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"fd://{sock.fileno()}",
         "--workers", "2", "--timeout", "60", "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()],
    )
    sock.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if server.poll() is not None:
            sys.exit(f"gunicorn exited with {server.returncode}; see {tmp / 'gunicorn.log'}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.kill()
            sys.exit(f"gunicorn not ready after {READY_TIMEOUT:.0f} s")
        time.sleep(0.2)
    print(f"fuzz: gunicorn ready at {base}")
    return server, base


def _fuzz(
    schema: str, auth: list[str], args: argparse.Namespace, tmp: Path, *, label: str
) -> bool:
    command = [
        str(BIN / "schemathesis"), "run", schema, *auth,
        "--checks", CHECKS,
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        "--request-timeout", "30",
        "--no-color",
    ]
    print(f"fuzz ({label}): {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    try:
        # In the temp dir: schemathesis keeps its example database in ./.schemathesis.
        result = subprocess.run(command, cwd=tmp, timeout=FUZZ_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"fuzz ({label}): over {FUZZ_TIMEOUT} s", file=sys.stderr)
        return False
    print(f"fuzz ({label}): exit {result.returncode} in {time.monotonic() - started:.1f} s")
    return result.returncode == 0


def _metrics_observed(base: str) -> bool:
    """/metrics (multiprocess mode, both workers) counted the fuzzer's requests by route."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:  # noqa: S310
        text = response.read().decode()
    counted = any(
        line.startswith("lookalike_http_request_duration_seconds_count{")
        and 'route="api:article-list"' in line
        for line in text.splitlines()
    )
    ok = counted and "lookalike_index_articles 240.0" in text
    print(f"fuzz: /metrics {'counted the requests' if ok else 'MISSING the fuzzed requests'}")
    return ok


def _postgres_create(url: str) -> str:
    """A fresh database named after DATABASE_URL's, with a _fuzz suffix; its URL."""
    import psycopg

    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'lookalike'}_fuzz"
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


def _postgres_drop(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
