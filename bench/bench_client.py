"""The light client vs uploads: server CPU per matched photo, and the client's photos/s.

Usage: cpulock -x .venv/bin/python bench/bench_client.py [--model efficientnet-lite0]
       [--photos 200] [--threads 2]

The catalog is the 81 packshots of ``<LOOKALIKE_REALPHOTOS>/grocery`` (default
``../shared/realphotos``), indexed with ``--model``; a gunicorn (1 worker) serves it on
127.0.0.1. The supplier photos are the first ``--photos`` store photos. Two runs against the
same server:

- **client**: ``lookalike_client.match_photos`` (decode + embed here, ``--threads`` model
  threads, vectors sent 64 per request): the client's photos/s, whole run;
- **uploads**: each photo POSTed to ``/api/similar/`` (the server decodes and embeds).

Server CPU = user + system time of the gunicorn processes (``/proc/<pid>/stat``) over each
run, divided by the photos matched. Nothing else runs under ``cpulock -x``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_matching import catalog_from_packshots, grocery_labels, realphotos_root  # noqa: E402
from bench.machine import cpu_model  # noqa: E402

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system seconds of ``pid`` and its children (gunicorn's worker) so far."""
    total = 0.0
    for proc in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def prepare(env: dict[str, str], model: str, labels: list[dict[str, str]]) -> str:
    """Migrate, store the packshots, build the index; a staff token."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from similarity.services.builds.runs import index_build_run

    call_command("migrate", verbosity=0)
    catalog_from_packshots(labels, realphotos_root() / "grocery" / "images")
    build = index_build_run(model=model, progress=False, trigger="bench")
    if build.status not in ("succeeded", "unchanged"):
        raise SystemExit(f"{model}: build {build.status}: {build.error}")
    user = get_user_model().objects.create_user("bench", is_staff=True)
    return Token.objects.create(user=user).key


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "config.wsgi", "--bind", f"fd://{sock.fileno()}",
         "--workers", "1", "--threads", "2", "--timeout", "300", "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        pass_fds=[sock.fileno()],
    )
    sock.close()
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                if response.status == 200:
                    return server, base
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"gunicorn not ready; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    labels = grocery_labels(realphotos_root())
    images = realphotos_root() / "grocery" / "images"
    work = Path(tempfile.mkdtemp(prefix="lookalike-bench-client-"))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings",
           "LOOKALIKE_DATA_DIR": str(work / "data"),
           "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
           "SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "false", "LOG_LEVEL": "WARNING",
           "HF_HUB_OFFLINE": "1", "LOOKALIKE_UPLOAD_THROTTLE": "100000/min"}
    token = prepare(env, args.model, labels)
    folder = work / "supplier"
    folder.mkdir()
    photos = [row["image_file"] for row in labels if row["kind"] == "store_photo"][:args.photos]
    for name in photos:
        (folder / name).symlink_to(images / name)

    import requests
    from lookalike_client import match_photos

    server, base = serve(env, work / "gunicorn.log")
    try:
        headers = {"Authorization": f"Token {token}"}
        # Warm-up: the server loads the model and its export once, the client fetches it.
        match_photos(folder, server=base, token=token, output=work / "warm.csv",
                     cache_dir=work / "cache", threads=args.threads, progress=False)
        before = process_cpu(server.pid)
        summary = match_photos(folder, server=base, token=token, output=work / "client.csv",
                               cache_dir=work / "cache", threads=args.threads, progress=False)
        client_cpu = process_cpu(server.pid) - before
        before = process_cpu(server.pid)
        started = time.perf_counter()
        with requests.Session() as session:
            for name in photos:
                with (images / name).open("rb") as handle:
                    reply = session.post(f"{base}/api/similar/", files={"image": handle},
                                         data={"k": "5"}, headers=headers, timeout=300)
                reply.raise_for_status()
        upload_seconds = time.perf_counter() - started
        upload_cpu = process_cpu(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=30)
    n = len(photos)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; model {args.model}; {n} photos")
    print(f"client run: {summary.photos / summary.seconds:.1f} photos/s "
          f"(threads={args.threads}; embed {summary.embed_seconds:.1f}s of {summary.seconds:.1f}s)")
    print(f"server CPU per photo, vectors: {1000 * client_cpu / n:.2f} ms")
    print(f"server CPU per photo, uploads: {1000 * upload_cpu / n:.2f} ms "
          f"(uploads wall {n / upload_seconds:.1f} photos/s)")
    print(f"ratio: {upload_cpu / max(client_cpu, 1e-9):.1f}x less server CPU with the client")


if __name__ == "__main__":
    main()
