"""Uploads in every colour mode a web image can have are searched, not refused."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from lookalike_core.images import (
    MSG_TRUNCATED,
    ImageValidationError,
    image_decode_reduced,
    validate_image_bytes,
)
from PIL import Image

from demo.sample_images import product_image

pytestmark = pytest.mark.django_db


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo() -> Image.Image:
    return product_image(7, size=600)  # several times the model's input: reduced on decode


def sixteen_bit() -> Image.Image:
    grey = np.asarray(photo().convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(grey)  # mode I;16


def transparent_palette() -> Image.Image:
    image = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    image.info["transparency"] = 0
    return image


MODES = {
    "png-palette": lambda: encode(photo().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "png-palette-transparent": lambda: encode(transparent_palette(), "PNG", transparency=0),
    "png-1bit": lambda: encode(photo().convert("1"), "PNG"),
    "png-16bit": lambda: encode(sixteen_bit(), "PNG"),
    "gif": lambda: encode(photo(), "GIF"),
    "gif-transparent": lambda: encode(transparent_palette(), "GIF", transparency=0),
}


@pytest.mark.parametrize("name", MODES)
def test_upload_in_each_mode_is_searched(client, catalog, name):
    file = io.BytesIO(MODES[name]())
    file.name = "query.png"
    response = client.post("/api/similar/", {"image": file, "k": 3}, format="multipart")
    assert response.status_code == 200, response.json()
    assert len(response.json()["results"]) == 3


@pytest.mark.parametrize("name", MODES)
def test_reduced_decode_keeps_the_picture(name):
    decoded = image_decode_reduced(MODES[name](), max_pixels=10**7, min_side=100)
    assert decoded.size == (100, 100) and decoded.mode in {"L", "RGB", "RGBA"}


def test_sixteen_bit_grey_is_scaled_not_clipped():
    white_and_mid = np.full((400, 400), 65535, dtype=np.uint16)
    white_and_mid[:, 200:] = 32896  # 128 * 257
    decoded = image_decode_reduced(encode(Image.fromarray(white_and_mid), "PNG"),
                                   max_pixels=10**7, min_side=100)
    assert decoded.getpixel((10, 10)) == 255 and decoded.getpixel((90, 10)) == 128


def png_with_short_data(width: int, height: int) -> bytes:
    """A PNG whose header promises ``height`` rows and whose one IDAT chunk holds 10."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = (b"\x00" + b"\x80" * width) * 10
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_png_header_promising_rows_its_data_cannot_hold_is_truncated(client, catalog):
    file = io.BytesIO(png_with_short_data(1, 25_000_000))
    file.name = "query.png"
    response = client.post("/api/similar/", {"image": file}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == f"image: {MSG_TRUNCATED}"
    with pytest.raises(ImageValidationError, match=MSG_TRUNCATED):
        validate_image_bytes(png_with_short_data(1, 25_000_000), max_pixels=10**8)


def test_solid_colour_png_at_the_deflate_limit_is_valid():
    data = encode(Image.new("L", (4000, 4000), 255), "PNG", optimize=True)
    assert len(data) < 4000 * 4000 / 700  # compressed towards deflate's 1032:1 limit
    assert validate_image_bytes(data, max_pixels=10**8).width == 4000
