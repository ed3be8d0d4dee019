"""Uploads in every colour mode a web image can have are searched, not refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from catalog.images import image_decode_reduced
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
