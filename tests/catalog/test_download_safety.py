"""Downloads that cannot be turned against the network, and that survive failures and kills."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from PIL import Image

from catalog.models import Article
from catalog.services import addresses
from catalog.services.downloads import DownloadSummary, images_download
from catalog.services.images import TEMP_GRACE_SECONDS, image_temp_files_sweep
from demo.loopback import LoopbackServer
from demo.sample_images import product_jpeg
from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db

JPEG = product_jpeg(1, size=64)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_pillow_limit() -> Iterator[None]:
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


@pytest.fixture
def guarded(settings) -> None:
    """The production default: private addresses refused."""
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": False}


def run(**options: object) -> DownloadSummary:
    return images_download(progress=False, backoff_factor=0, **options)


# --- which addresses are refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ],
)
def test_private_addresses_are_refused(address: str, kind: str) -> None:
    assert addresses.address_refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert addresses.address_refusal(ipaddress.ip_address(address)) is None


# --- refused at connect time, on every hop ------------------------------------------------


def failure(article: Article) -> str:
    article.refresh_from_db()
    assert article.download_status == Article.DownloadStatus.FAILED, article.download_error
    return article.download_error


def test_loopback_url_is_refused_by_default(loopback: LoopbackServer, guarded: None) -> None:
    article = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))

    summary = run()

    assert summary.failed == 1
    assert "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address" in failure(article)
    assert loopback.hits == {}  # no connection was ever made


def test_hostname_resolving_to_a_private_address_is_refused(
    loopback: LoopbackServer, guarded: None
) -> None:
    url = loopback.add("/a.jpg", JPEG).replace("127.0.0.1", "localhost")
    article = ArticleFactory(image_url=url)

    run()

    assert "refused: localhost resolves to" in failure(article)
    assert loopback.hits == {}


def test_a_name_with_any_private_address_is_refused(
    loopback: LoopbackServer, guarded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public first, private second (a rebinding setup): the whole name is refused."""
    real = socket.getaddrinfo

    def resolve(host: str, port: object, *args: object, **kwargs: object) -> list:
        if host == "images.shop.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(addresses.socket, "getaddrinfo", resolve)
    article = ArticleFactory(image_url="http://images.shop.test/a.jpg")

    run()

    assert "refused: images.shop.test resolves to 10.0.0.7, a private address" in failure(article)


def test_redirect_to_loopback_is_refused(guarded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first hop is let through (as if public); its redirect to 127.0.0.1 is not."""
    with LoopbackServer() as shop, LoopbackServer() as internal:
        target = internal.add("/secret.jpg", JPEG)

        def redirect(request: BaseHTTPRequestHandler) -> None:
            request.send_response(302)
            request.send_header("Location", target)
            request.send_header("Content-Length", "0")
            request.end_headers()

        article = ArticleFactory(image_url=shop.add("/a.jpg", redirect))
        checked = addresses.public_addresses

        def shop_is_public(host: str, port: int) -> list:
            if port == urlsplit(shop.url("/")).port:
                return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return checked(host, port)

        monkeypatch.setattr(addresses, "public_addresses", shop_is_public)
        run()

        assert "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address" in failure(article)
        assert shop.hits == {"/a.jpg": 1}
        assert internal.hits == {}


def test_allow_private_setting_lets_loopback_through(loopback: LoopbackServer, settings) -> None:
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": True}
    article = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))

    run()

    article.refresh_from_db()
    assert article.download_status == Article.DownloadStatus.DOWNLOADED


# --- a failed refresh keeps the last good image -------------------------------------------


def test_failed_refresh_of_an_unchanged_url_keeps_the_image(loopback: LoopbackServer) -> None:
    articles = [ArticleFactory(image_url=loopback.add(f"/{n}.jpg", JPEG)) for n in range(3)]
    run()
    loopback.routes.clear()  # the image server now answers 404 to everything

    summary = run(force=True)

    assert (summary.failed, summary.kept) == (3, 3)
    assert "refresh failed, the previous image is kept: HTTP 404" in summary.failures[0][1]
    for article in articles:
        article.refresh_from_db()
        assert article.download_status == Article.DownloadStatus.DOWNLOADED and article.has_image
        assert article.download_error == ""
        assert article.refresh_error.startswith("HTTP 404")
        assert article.refresh_failed_at is not None
        path = Path(django_settings.MEDIA_ROOT) / article.image.name
        assert path.read_bytes() == JPEG

    for n in range(3):  # back again
        loopback.add(f"/{n}.jpg", JPEG)
    run(force=True)
    articles[0].refresh_from_db()
    assert (articles[0].refresh_error, articles[0].refresh_failed_at) == ("", None)


def test_failed_refresh_without_an_intact_file_fails(loopback: LoopbackServer) -> None:
    article = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    run()
    article.refresh_from_db()
    (Path(django_settings.MEDIA_ROOT) / article.image.name).write_bytes(b"damaged")
    loopback.routes.clear()

    summary = run(force=True)

    assert (summary.failed, summary.kept) == (1, 0)
    assert failure(article).startswith("HTTP 404")


def test_changed_url_that_fails_takes_the_old_image_out_and_says_so(
    loopback: LoopbackServer,
) -> None:
    old = loopback.add("/a.jpg", JPEG)
    article = ArticleFactory(image_url=old)
    run()
    Article.objects.filter(pk=article.pk).update(image_url=loopback.url("/gone.jpg"))

    run()

    error = failure(article)
    assert error.startswith(f"the new image_url failed, so the previous image (from {old})")
    assert error.endswith("HTTP 404 Not Found")


# --- temp files of interrupted runs -------------------------------------------------------


def make_temp(name: str, age: float) -> Path:
    path = Path(django_settings.MEDIA_ROOT) / "images" / "ab" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_download_run_sweeps_old_temp_files_only(loopback: LoopbackServer) -> None:
    old = make_temp(".download-old.tmp", age=TEMP_GRACE_SECONDS + 60)
    live = make_temp(".download-live.tmp", age=1)  # another run may be writing it
    other = make_temp("keep.tmp", age=TEMP_GRACE_SECONDS + 60)
    ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))

    summary = run()

    assert summary.swept == 1
    assert not old.exists() and live.exists() and other.exists()
    assert image_temp_files_sweep(media_root=Path(django_settings.MEDIA_ROOT), older_than=0) == 1


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), *args]


def test_killed_downloader_leaves_a_temp_file_the_next_run_sweeps(tmp_path: Path) -> None:
    """SIGKILL mid-body leaves a .download-*.tmp; the next run removes it and completes."""
    data = tmp_path / "killed"
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOOKALIKE_DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
        "LOOKALIKE_DOWNLOAD_ALLOW_PRIVATE": "1",
    }
    data.mkdir()
    subprocess.run(_manage("migrate", "-v0"), env=env, check=True, cwd=REPO)
    started, release = threading.Event(), threading.Event()

    def slow(request: BaseHTTPRequestHandler) -> None:
        """Half the body, then nothing until the test is over."""
        try:
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Content-Length", str(len(JPEG)))
            request.end_headers()
            request.wfile.write(JPEG[: len(JPEG) // 2])
            request.wfile.flush()
        except OSError:
            return
        started.set()
        release.wait(30)

    with LoopbackServer() as server:
        url = server.add("/a.jpg", slow)
        catalog = tmp_path / "catalog.csv"
        catalog.write_text(f"article_id,image_url\nK1,{url}\n")
        subprocess.run(_manage("import_catalog", str(catalog), "-v0"), env=env, check=True,
                       cwd=REPO)
        downloader = subprocess.Popen(
            _manage("download_images", "--retries", "0", "--timeout", "30", "-v0"),
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            assert started.wait(60), "the downloader never reached the image server"
            temps = _wait_for(lambda: list((data / "media" / "images").rglob(".download-*.tmp")))
            downloader.send_signal(signal.SIGKILL)
            downloader.wait(30)
        finally:
            if downloader.poll() is None:
                downloader.kill()
            release.set()
        assert downloader.returncode == -signal.SIGKILL
        assert len(temps) == 1 and temps[0].exists()  # left behind by the killed process
        stamp = time.time() - TEMP_GRACE_SECONDS - 5  # as if the kill was a while ago
        os.utime(temps[0], (stamp, stamp))

        server.add("/a.jpg", JPEG)
        finished = subprocess.run(
            _manage("download_images", "--retries", "0", "-v1"), env=env, cwd=REPO,
            capture_output=True, text=True, check=False,
        )

    assert finished.returncode == 0, finished.stderr
    assert "1 downloaded" in finished.stdout
    assert not temps[0].exists()
    assert list((data / "media" / "images").rglob("*.tmp")) == []
    assert len(list((data / "media" / "images").rglob("*.jpg"))) == 1


def _wait_for(probe: Callable[[], list[Path]], timeout: float = 30.0) -> list[Path]:
    """Poll ``probe`` until it returns something truthy (bounded); no fixed sleeps."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        tick.wait(0.02)
    raise AssertionError("condition not met within the timeout")


def test_https_connects_to_the_checked_address_keeping_host_and_sni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded connection dials the checked IP; TLS still verifies the host name."""
    import shutil
    import ssl
    from http.server import HTTPServer

    import requests

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=images.shop.test",
         "-addext", "subjectAltName=DNS:images.shop.test"],
        check=True, capture_output=True,
    )
    seen: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["host"] = self.headers["Host"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)

        def log_message(self, format: str, *args: object) -> None:
            return

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen.update(sni=name or "")
    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dialled: list[str] = []

    def resolve(host: str, port: int) -> list:
        dialled.append(host)  # the name is resolved once, by the guard, and checked there
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(addresses, "public_addresses", resolve)
    session = requests.Session()
    session.mount("https://", addresses.GuardedAdapter())
    try:
        response = session.get(f"https://images.shop.test:{port}/a.jpg", verify=str(cert),
                               timeout=10)
    finally:
        session.close()
        server.shutdown()
        server.server_close()

    assert response.status_code == 200 and response.content == JPEG
    assert seen == {"sni": "images.shop.test", "host": f"images.shop.test:{port}"}
    assert dialled == ["images.shop.test"]
