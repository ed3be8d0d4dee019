"""Uploads are cheap to refuse and cheap to serve; text queries are bounded."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from similarity.selectors.uploads import upload_decode_slot
from similarity.services.builds.runs import index_build_run
from tests.similarity.api.conftest import png_bytes
from tests.similarity.api.test_search import lookalike
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db

BIG_SIDE = 6300  # 39.7 megapixels in a PNG of ~130 KB


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = png_bytes(Image.new("RGB", (BIG_SIDE, BIG_SIDE), (200, 30, 40)))
    assert len(data) < 200_000
    return data


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of every image Pillow actually decodes (load() with pending tiles)."""
    seen: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> object:
        if self.tile:
            seen.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


def upload(client, data: bytes, **fields):
    return client.post("/api/similar/", {"image": io.BytesIO(data), **fields}, format="multipart")


class PeakMemory:
    """Growth of this process's peak resident memory (Linux: VmHWM reset via clear_refs)."""

    def __enter__(self) -> PeakMemory:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pytest.skip("peak-RSS reset (/proc/self/clear_refs) not available here")
        self.before = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mb = (_status_kb("VmHWM") - self.before) / 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def test_big_png_over_the_upload_cap_is_refused_without_decoding(
    client, catalog, big_png, decodes
):
    started = time.perf_counter()
    response = upload(client, big_png)
    elapsed = time.perf_counter() - started

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image"
    assert "39690000 pixels > limit 25000000" in error["message"]
    assert decodes == [] and elapsed < 2.0


def test_big_png_within_the_cap_is_decoded_once_and_reduced(client, catalog, big_png, decodes):
    with lookalike(UPLOAD_MAX_PIXELS=40_000_000), PeakMemory() as memory:
        started = time.perf_counter()
        response = upload(client, big_png, k=3)
        elapsed = time.perf_counter() - started

    assert response.status_code == 200, response.json()
    assert len(response.json()["results"]) == 3
    assert decodes == [(BIG_SIDE, BIG_SIDE)]  # once; twice (validate, then load) before
    # One full-size decode buffer (RGB: 4 bytes a pixel, ~160 MB), freed once reduced.
    assert memory.growth_mb < 250, f"peak memory grew by {memory.growth_mb:.0f} MB"
    assert elapsed < 15.0, f"{elapsed:.1f}s"


def test_jpeg_upload_decodes_at_reduced_scale(client, catalog, decodes):
    buffer = io.BytesIO()
    Image.effect_noise((2400, 1600), 40).convert("RGB").save(buffer, "JPEG", quality=80)

    response = upload(client, buffer.getvalue())

    assert response.status_code == 200
    (size,) = decodes
    assert size[0] < 2400 and min(size) >= 128  # draft: a DCT-scaled decode, not full size


def test_chunked_upload_is_411(client, catalog, photo_png):
    response = client.post(
        "/api/similar/", {"image": io.BytesIO(photo_png)}, format="multipart",
        CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked",
    )
    assert response.status_code == 411
    error = response.json()["error"]
    assert error["code"] == "length_required" and "chunked" in error["message"]


@pytest.mark.parametrize("length", [{"CONTENT_LENGTH": "0"}, {}])
def test_empty_body_is_400(client, catalog, length):
    response = client.generic(
        "POST", "/api/similar/", b"", content_type="multipart/form-data; boundary=x", **length
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "empty_upload" and "empty request body" in error["message"]


def test_empty_image_file_is_400(client, catalog):
    response = upload(client, b"")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and "empty body (0 bytes)" in error["message"]


@pytest.fixture
def held_slot() -> Iterator[threading.Event]:
    """Hold the only decode slot from another thread until the event is set."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with upload_decode_slot():
            held.set()
            release.wait(30)

    with lookalike(UPLOAD_CONCURRENCY=1, UPLOAD_WAIT_SECONDS=0.05):
        thread = threading.Thread(target=hold)
        thread.start()
        assert held.wait(10)
        try:
            yield release
        finally:
            release.set()
            thread.join(10)


def test_uploads_over_the_concurrency_bound_get_503(client, catalog, photo_png, held_slot):
    response = upload(client, photo_png)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "uploads_busy" and "1 at a time" in error["message"]

    held_slot.set()
    with lookalike(UPLOAD_CONCURRENCY=1, UPLOAD_WAIT_SECONDS=10):
        assert upload(client, photo_png).status_code == 200


def test_text_over_the_length_limit_is_400(client, catalog):
    response = client.get("/api/similar/", {"text": "bag " * 100})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_query"
    assert "text is 399 characters long; the limit is 300" in error["message"]


def test_text_over_the_models_token_limit_is_400(client, tiny_clip):
    """The tiny CLIP reads 32 positions: a text under the character limit can exceed it."""
    make_catalog(4)
    index_build_run(model=str(tiny_clip), progress=False)

    response = client.get("/api/similar/", {"text": "red leather bag " * 12})

    assert response.status_code == 400, response.json()
    assert "more tokens than the model reads" in response.json()["error"]["message"]
    assert client.get("/api/similar/", {"text": "red bag"}).status_code == 200
