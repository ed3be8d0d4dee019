"""Image downloads against a real HTTP server on 127.0.0.1: success, failures, idempotency."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from lookalike_core.images import ImageValidationError, validate_image_bytes
from PIL import Image

from catalog.models import Article, article_image_path
from catalog.services import download_records, fetching
from catalog.services.downloads import DownloadSummary, images_download
from demo.loopback import LoopbackServer
from demo.sample_images import product_jpeg
from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db

JPEG = product_jpeg(1, size=64)
JPEG_2 = product_jpeg(2, size=64)


@pytest.fixture(autouse=True)
def _restore_pillow_limit() -> Iterator[None]:
    """The service sets Pillow's process-wide pixel limit; don't leak it to other tests."""
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown so slow handlers return at once instead of holding server threads."""
    event = threading.Event()
    yield event
    event.set()


def run(**options: object) -> DownloadSummary:
    """images_download without a progress bar or retry backoff sleeps."""
    return images_download(progress=False, backoff_factor=0, **options)


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit PNG claiming huge dimensions in a few dozen bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def send(request: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    fields = {"Content-Type": "image/jpeg", "Content-Length": str(len(body))}
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    try:
        request.send_response(status)
        for name, value in fields.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)
    except OSError:  # the client gave up first (timeout, size limit): expected
        pass


def chunked(body: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """Serve ``body`` with chunked encoding: no Content-Length to check up front."""

    def handler(request: BaseHTTPRequestHandler) -> None:
        try:
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Transfer-Encoding", "chunked")
            request.end_headers()
            for start in range(0, len(body), 4096):
                part = body[start:start + 4096]
                request.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            request.wfile.write(b"0\r\n\r\n")
        except OSError:
            request.close_connection = True

    return handler


def media_path(name: str) -> Path:
    from django.conf import settings

    return Path(settings.MEDIA_ROOT) / name


def stored_file(article: Article) -> Path:
    return media_path(article.image.name)


def temp_files() -> list[Path]:
    from django.conf import settings

    return list(Path(settings.MEDIA_ROOT).rglob("*.tmp"))


# --- success ------------------------------------------------------------------------------


def test_downloads_images_with_file_sha_and_size(loopback: LoopbackServer) -> None:
    jpeg = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    image = ArticleFactory(image_url=loopback.add("/b", png((30, 20)), content_type="image/png"))

    summary = run()

    assert (summary.downloaded, summary.skipped, summary.failed) == (2, 0, 0)
    assert summary.bytes_downloaded == len(JPEG) + len(png((30, 20)))
    jpeg.refresh_from_db()
    image.refresh_from_db()
    assert jpeg.download_status == Article.DownloadStatus.DOWNLOADED
    assert jpeg.image.name == article_image_path(jpeg.article_id, "jpg")
    assert stored_file(jpeg).read_bytes() == JPEG  # original bytes, not re-encoded
    assert jpeg.image_sha256 == hashlib.sha256(JPEG).hexdigest()
    assert (jpeg.image_width, jpeg.image_height) == (64, 64)
    assert jpeg.downloaded_url == jpeg.image_url
    assert (jpeg.download_attempts, jpeg.download_error) == (1, "")
    assert jpeg.downloaded_at is not None and jpeg.has_image
    # The extension comes from the detected format, never from the URL.
    assert image.image.name.endswith(".png") and (image.image_width, image.image_height) == (30, 20)
    assert temp_files() == []


def test_redirect_is_followed(loopback: LoopbackServer) -> None:
    target = loopback.add("/real.jpg", JPEG)
    loopback.add("/moved", lambda request: send(request, 302, Location=target))
    article = ArticleFactory(image_url=loopback.url("/moved"))

    assert run().downloaded == 1
    article.refresh_from_db()
    assert article.has_image and article.downloaded_url == loopback.url("/moved")


def test_server_error_is_retried_then_succeeds(loopback: LoopbackServer) -> None:
    calls: list[int] = []

    def flaky(request: BaseHTTPRequestHandler) -> None:
        calls.append(1)
        if len(calls) == 1:
            send(request, 500, b"oops")
        else:
            send(request, 200, JPEG)

    article = ArticleFactory(image_url=loopback.add("/flaky.jpg", flaky))

    assert run(retries=2).downloaded == 1
    assert loopback.hits["/flaky.jpg"] == 2
    article.refresh_from_db()
    assert article.has_image and article.download_attempts == 1


# --- failures -----------------------------------------------------------------------------


def failure_of(article: Article) -> str:
    article.refresh_from_db()
    assert article.download_status == Article.DownloadStatus.FAILED
    assert not article.image and article.download_attempts == 1
    return article.download_error


def test_not_found_fails_without_retry(loopback: LoopbackServer) -> None:
    article = ArticleFactory(image_url=loopback.url("/missing.jpg"))

    summary = run(retries=3)

    assert summary.failures == [(article.article_id, "HTTP 404 Not Found")]
    assert loopback.hits["/missing.jpg"] == 1
    assert failure_of(article) == "HTTP 404 Not Found"


def test_persistent_server_error_gives_up_after_retries(loopback: LoopbackServer) -> None:
    article = ArticleFactory(image_url=loopback.add("/down.jpg", b"", status=503))

    run(retries=2)

    assert loopback.hits["/down.jpg"] == 3
    assert failure_of(article) == "HTTP 503 Service Unavailable"


def test_slow_response_times_out(loopback: LoopbackServer, release: threading.Event) -> None:
    loopback.add("/slow.jpg", lambda request: (release.wait(1.0), send(request, 200, JPEG)))
    article = ArticleFactory(image_url=loopback.url("/slow.jpg"))

    run(timeout=0.3, retries=0)

    assert failure_of(article) == "timed out after 0.3s"


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (JPEG[: len(JPEG) // 2], "image/jpeg", "truncated image"),
        (b"<!doctype html><html>Sorry</html>", "image/jpeg", "not an image (HTML page)"),
        (b"<html><body>Sorry</body></html>", "text/html", "not an image (text/html)"),
        (b"", "image/jpeg", "empty body (0 bytes)"),
        (png((300, 200))[:-200], "image/png", "truncated image"),
        (png_header_only(20_000, 20_000), "image/png",
         "decompression bomb: 400000000 pixels > limit 64000000"),
    ],
    ids=["truncated-jpeg", "html-as-jpeg", "html", "empty", "truncated-png", "bomb"],
)
def test_bad_bodies_fail_with_clear_reason(
    loopback: LoopbackServer, body: bytes, content_type: str, error: str
) -> None:
    article = ArticleFactory(image_url=loopback.add("/bad", body, content_type=content_type))

    run()

    assert failure_of(article) == error
    assert temp_files() == []


def test_pixel_limit_comes_from_settings(loopback: LoopbackServer, settings) -> None:
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_MAX_PIXELS": 1000}
    article = ArticleFactory(image_url=loopback.add("/p.png", png((40, 30)), "image/png"))

    with pytest.warns(Image.DecompressionBombWarning):  # Pillow's own guard, process-wide
        run()

    assert failure_of(article) == "decompression bomb: 1200 pixels > limit 1000"


def test_oversized_body_fails(loopback: LoopbackServer, settings) -> None:
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_MAX_BYTES": 1000}
    declared = ArticleFactory(image_url=loopback.add("/big.jpg", JPEG))
    streamed = ArticleFactory(image_url=loopback.add("/chunked.jpg", chunked(JPEG)))

    run()

    assert len(JPEG) > 1000
    assert failure_of(declared) == "image too large: > 1000 bytes"
    assert failure_of(streamed) == "image too large: > 1000 bytes"


def test_body_shorter_than_content_length_fails(loopback: LoopbackServer) -> None:
    def liar(request: BaseHTTPRequestHandler) -> None:
        send(request, 200, JPEG[:500], Content_Length=str(len(JPEG)))
        request.close_connection = True

    article = ArticleFactory(image_url=loopback.add("/liar.jpg", liar))

    run(retries=0)

    assert failure_of(article).startswith("incomplete body")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/a.jpg", "file:///etc/passwd"])
def test_only_http_and_https(url: str) -> None:
    article = Article.objects.create(article_id="X1", image_url=url)  # no URL validation here

    run()

    assert failure_of(article).startswith("unsupported URL scheme")


def test_redirect_to_other_scheme_fails(loopback: LoopbackServer) -> None:
    loopback.add("/ftp", lambda request: send(request, 302, Location="ftp://127.0.0.1/a.jpg"))
    article = ArticleFactory(image_url=loopback.url("/ftp"))

    run()

    assert failure_of(article) == "unsupported URL scheme 'ftp': only http and https are allowed"


def test_connection_refused_is_a_clear_failure() -> None:
    article = ArticleFactory(image_url="http://127.0.0.1:9/a.jpg")

    run(retries=0)

    assert failure_of(article) == "connection failed: Failed to establish a new connection: " \
        "[Errno 111] Connection refused"


def test_a_failure_touches_no_other_article(loopback: LoopbackServer) -> None:
    good = ArticleFactory(image_url=loopback.add("/good.jpg", JPEG))
    bad = ArticleFactory(image_url=loopback.url("/gone.jpg"))
    inactive = ArticleFactory(image_url=loopback.add("/off.jpg", JPEG), is_active=False)

    summary = run()

    assert (summary.downloaded, summary.failed) == (1, 1)
    good.refresh_from_db()
    inactive.refresh_from_db()
    assert good.has_image and stored_file(good).read_bytes() == JPEG
    assert failure_of(bad) == "HTTP 404 Not Found"
    assert inactive.download_status == Article.DownloadStatus.PENDING
    assert "/off.jpg" not in loopback.hits


# --- idempotency and modes ----------------------------------------------------------------


def test_second_run_makes_no_request(loopback: LoopbackServer) -> None:
    ArticleFactory.create_batch(3, image_url=loopback.add("/a.jpg", JPEG))
    run()
    hits = dict(loopback.hits)

    summary = run()

    assert (summary.downloaded, summary.skipped, summary.failed) == (0, 3, 0)
    assert loopback.hits == hits


def test_missing_or_altered_file_is_downloaded_again(loopback: LoopbackServer) -> None:
    missing, altered = ArticleFactory.create_batch(2, image_url=loopback.add("/a.jpg", JPEG))
    run()
    missing.refresh_from_db()
    altered.refresh_from_db()
    stored_file(missing).unlink()
    stored_file(altered).write_bytes(JPEG_2)

    summary = run()

    assert summary.downloaded == 2 and loopback.hits["/a.jpg"] == 4
    assert stored_file(missing).read_bytes() == stored_file(altered).read_bytes() == JPEG


def test_changed_url_downloads_again_and_replaces_old_file(loopback: LoopbackServer) -> None:
    article = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    run()
    article.refresh_from_db()
    old_file = stored_file(article)
    Article.objects.filter(pk=article.pk).update(
        image_url=loopback.add("/b.png", png((10, 10)), content_type="image/png")
    )

    summary = run()

    assert (summary.downloaded, summary.skipped) == (1, 0)
    article.refresh_from_db()
    assert article.image.name.endswith(".png") and article.downloaded_url.endswith("/b.png")
    assert stored_file(article).exists() and not old_file.exists()
    assert article.download_attempts == 2


def test_failed_redownload_keeps_the_old_file(loopback: LoopbackServer) -> None:
    article = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    run()
    article.refresh_from_db()
    name, sha = article.image.name, article.image_sha256
    Article.objects.filter(pk=article.pk).update(image_url=loopback.url("/gone.jpg"))

    run()

    article.refresh_from_db()
    assert article.download_status == Article.DownloadStatus.FAILED and not article.has_image
    assert (article.image.name, article.image_sha256) == (name, sha)
    assert stored_file(article).read_bytes() == JPEG


def test_force_downloads_everything_again(loopback: LoopbackServer) -> None:
    ArticleFactory.create_batch(2, image_url=loopback.add("/a.jpg", JPEG))
    run()

    summary = run(force=True)

    assert (summary.downloaded, summary.skipped) == (2, 0)
    assert loopback.hits["/a.jpg"] == 4


def test_only_failed_retries_failures_only(loopback: LoopbackServer) -> None:
    ok = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    flaky = ArticleFactory(image_url=loopback.url("/later.jpg"))
    run()
    loopback.add("/later.jpg", JPEG)
    pending = ArticleFactory(image_url=loopback.add("/new.jpg", JPEG))

    default = run()  # a plain run leaves failures alone (and says so)
    assert (default.downloaded, default.skipped, default.not_retried) == (1, 1, 1)
    Article.objects.filter(pk=pending.pk).update(download_status=Article.DownloadStatus.PENDING)

    summary = run(only_failed=True)

    assert (summary.downloaded, summary.skipped, summary.failed) == (1, 0, 0)
    flaky.refresh_from_db()
    assert flaky.has_image and flaky.download_attempts == 2 and flaky.download_error == ""
    assert loopback.hits["/a.jpg"] == 1 and loopback.hits["/new.jpg"] == 1
    ok.refresh_from_db()
    assert ok.download_attempts == 1


def test_article_ids_limit_the_batch(loopback: LoopbackServer) -> None:
    chosen, other = ArticleFactory.create_batch(2, image_url=loopback.add("/a.jpg", JPEG))

    assert run(article_ids=[chosen.article_id]).downloaded == 1
    other.refresh_from_db()
    assert other.download_status == Article.DownloadStatus.PENDING


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be >= 1; got 0"),
        ({"timeout": 0}, "timeout must be > 0 seconds; got 0"),
        ({"retries": -1}, "retries must be >= 0; got -1"),
    ],
)
def test_invalid_options_are_rejected(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(**options)


# --- races and slow servers ---------------------------------------------------------------


def test_url_changed_during_download_is_not_recorded(
    loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched = ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    failing = ArticleFactory(image_url=loopback.url("/gone.jpg"))
    new_urls = {fetched.pk: loopback.add("/a-v2.jpg", JPEG_2),
                failing.pk: loopback.add("/b-v2.jpg", JPEG)}
    record = download_records.Recorder.flush

    def import_runs_before_flush(recorder: download_records.Recorder) -> None:
        # What an import does between this run's fetch and its write-back.
        for pk, url in new_urls.items():
            Article.objects.filter(pk=pk).update(image_url=url)
        new_urls.clear()
        record(recorder)

    monkeypatch.setattr(download_records.Recorder, "flush", import_runs_before_flush)
    summary = run()

    assert (summary.downloaded, summary.failed, summary.stale) == (0, 0, 2)
    assert summary.failures == [] and summary.bytes_downloaded == 0
    for article in (fetched, failing):
        article.refresh_from_db()
        assert article.download_status == Article.DownloadStatus.PENDING
        assert not article.image and not article.downloaded_url
        assert article.download_attempts == 0
    # The file fetched from the old URL is referenced by no row: removed.
    assert not media_path(article_image_path(fetched.article_id, "jpg")).exists()

    monkeypatch.undo()
    assert run().downloaded == 2  # the next run fetches the new URLs
    fetched.refresh_from_db()
    assert fetched.downloaded_url.endswith("/a-v2.jpg")
    assert stored_file(fetched).read_bytes() == JPEG_2


def test_gzip_body_is_still_decoded(loopback: LoopbackServer) -> None:
    """The session asks for identity; a server that compresses anyway is still understood."""
    body = gzip.compress(JPEG)
    article = ArticleFactory(image_url=loopback.add(
        "/gz.jpg", lambda request: send(request, 200, body, Content_Encoding="gzip")
    ))

    assert run().downloaded == 1
    article.refresh_from_db()
    assert stored_file(article).read_bytes() == JPEG


def test_trickling_server_is_cut_off_at_the_time_limit(
    loopback: LoopbackServer, release: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    def trickle(request: BaseHTTPRequestHandler) -> None:
        """A valid JPEG start, then one byte every 0.1 s: each read beats the timeout."""
        try:
            request.send_response(200)
            request.send_header("Content-Type", "image/jpeg")
            request.send_header("Content-Length", str(len(JPEG)))
            request.end_headers()
            request.wfile.write(JPEG[:20])
            for byte in JPEG[20:60]:
                if release.wait(0.1):
                    break
                request.wfile.write(bytes([byte]))
        except OSError:
            pass
        request.close_connection = True

    monkeypatch.setattr(fetching, "DEADLINE_FACTOR", 2)  # 0.3 s timeout -> 0.6 s for the body
    article = ArticleFactory(image_url=loopback.add("/trickle.jpg", trickle))

    started = time.monotonic()
    run(timeout=0.3, retries=0)

    assert time.monotonic() - started < 1.5
    assert failure_of(article) == fetching.MSG_DEADLINE.format(limit=0.6)
    assert "time limit of 0.6s" in failure_of(article)


# --- interruption -------------------------------------------------------------------------


def test_ctrl_c_leaves_no_partial_state() -> None:
    with LoopbackServer(latency=0.02) as server:
        articles = [ArticleFactory(image_url=server.add(f"/{n}.jpg", JPEG)) for n in range(40)]

        def interrupt(request: BaseHTTPRequestHandler) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does, delivered to the main thread
            send(request, 200, JPEG)

        server.add("/5.jpg", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run(workers=2)

    assert temp_files() == []
    downloaded = Article.objects.filter(download_status=Article.DownloadStatus.DOWNLOADED)
    assert 0 < downloaded.count() < len(articles)  # finished work kept, queued work cancelled
    for article in downloaded:
        assert stored_file(article).read_bytes() == JPEG


def test_interrupt_while_writing_removes_the_temp_file(
    loopback: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # the image writer fsyncs before the rename
    with pytest.raises(KeyboardInterrupt):
        run()

    assert temp_files() == []
    assert not Article.objects.filter(download_status=Article.DownloadStatus.DOWNLOADED).exists()


# --- image validation (shared with uploads) -----------------------------------------------


def test_validate_image_bytes_reports_displayed_size_after_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20)).save(buffer, "JPEG", exif=exif)

    info = validate_image_bytes(buffer.getvalue(), max_pixels=10_000)

    assert (info.format, info.ext, info.width, info.height) == ("JPEG", "jpg", 20, 40)


def test_validate_image_bytes_rejects_other_formats() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "BMP")

    with pytest.raises(ImageValidationError, match="unsupported image format BMP"):
        validate_image_bytes(buffer.getvalue(), max_pixels=10_000)


# --- command ------------------------------------------------------------------------------


def test_command_prints_summary_and_failures(loopback: LoopbackServer) -> None:
    ArticleFactory(image_url=loopback.add("/a.jpg", JPEG))
    bad = ArticleFactory(image_url=loopback.url("/gone.jpg"))
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"1 download\(s\) failed") as failed:
        call_command("download_images", "--workers", "2", "--timeout", "2", stdout=out)

    assert failed.value.returncode == 2  # done, with failed items (README "Exit codes")
    text = out.getvalue()
    assert "1 downloaded, 0 skipped (unchanged), 1 failed in " in text
    assert "images/s" in text and " MB)" in text
    assert f"failed {bad.article_id}: HTTP 404 Not Found" in text


def test_command_rejects_unusable_options() -> None:
    with pytest.raises(CommandError, match="workers must be >= 1"):
        call_command("download_images", "--workers", "0")
    with pytest.raises(CommandError):
        call_command("download_images", "--force", "--only-failed")

