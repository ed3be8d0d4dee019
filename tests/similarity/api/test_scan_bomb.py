"""A progressive JPEG repeating a scan is refused from its markers, before decoding, on every
way a photo comes in: upload, image_url, batch item, supplier feed; normal JPEGs pass."""

from __future__ import annotations

import io

import pytest
from lookalike_core.images import (
    MAX_JPEG_SCANS,
    ImageValidationError,
    image_decode_reduced,
    jpeg_scan_count,
    validate_image_bytes,
)

from demo.hostile_images import scan_bomb_jpeg
from demo.sample_images import product_image

pytestmark = pytest.mark.django_db

BOMB = scan_bomb_jpeg(scans=2000, size=64)
REFUSED = f"progressive JPEG with more than {MAX_JPEG_SCANS} scans"


@pytest.fixture
def allow_private(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": True}


def jpeg(**options) -> bytes:
    buffer = io.BytesIO()
    product_image(4, size=96).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_scans_are_counted_from_the_markers():
    assert jpeg_scan_count(jpeg()) == 1
    assert jpeg_scan_count(jpeg(progressive=True)) == 10  # libjpeg's default progression
    assert jpeg_scan_count(BOMB) == 2000
    assert jpeg_scan_count(BOMB, stop_after=MAX_JPEG_SCANS) == MAX_JPEG_SCANS + 1
    validate_image_bytes(jpeg(progressive=True), max_pixels=10**6)  # normal ones pass
    for decode in (lambda: validate_image_bytes(BOMB, max_pixels=10**6),
                   lambda: image_decode_reduced(BOMB, max_pixels=10**6, min_side=32)):
        with pytest.raises(ImageValidationError, match=REFUSED):
            decode()


def test_an_uploaded_scan_bomb_is_refused(client, catalog):
    upload = io.BytesIO(BOMB)
    upload.name = "bomb.jpg"
    response = client.post("/api/similar/", {"image": upload}, format="multipart")
    assert response.status_code == 400
    assert REFUSED in response.json()["error"]["message"]


def test_a_scan_bomb_by_image_url_and_in_a_batch_is_refused(client, catalog, loopback,
                                                             allow_private, admin_user):
    client.force_authenticate(admin_user)  # anonymous clients read "download failed"
    url = loopback.add("/bomb.jpg", BOMB)
    single = client.post("/api/similar/", {"image_url": url}, format="json")
    assert single.status_code == 400 and REFUSED in single.json()["error"]["message"]
    batch = client.post("/api/similar/batch/", {"items": [{"image_url": url},
                                                          {"article_id": "S0001"}]},
                        format="json")
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["status"] == 400 and first["error"]["code"] == "image_url_failed"
    assert second["status"] == 200


def test_a_supplier_scan_bomb_is_an_error_row(catalog, loopback, allow_private, tmp_path):
    from similarity.services.matching.photos import supplier_photos_match

    feed = tmp_path / "feed.csv"
    feed.write_text(f"supplier_ref,image_url\nbomb,{loopback.add('/b.jpg', BOMB)}\n")
    summary = supplier_photos_match(source=feed, output=tmp_path / "r.csv", progress=False)
    assert [ref for ref, _ in summary.errors] == ["bomb"]
    assert REFUSED in summary.errors[0][1]
