"""load_image: every colour mode to RGB, EXIF orientation, JPEG draft decoding, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from lookalike_core.imaging import ImageDecodeError, load_image
from PIL import Image

from demo.sample_images import product_image, product_jpeg


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def pixel(image: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def test_rgb_jpeg_from_every_source_kind(tmp_path):
    data = product_jpeg(1, size=64)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    decoded = [load_image(s) for s in (data, path, str(path), io.BytesIO(data))]
    for image in decoded:
        assert image.mode == "RGB" and image.size == (64, 64)
        assert np.array_equal(np.asarray(image), np.asarray(decoded[0]))


def test_rgba_png_composites_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((1, 1), (255, 0, 0, 255))
    decoded = load_image(encode(image, "PNG"))
    assert pixel(decoded) == (255, 255, 255)
    assert pixel(decoded, (1, 1)) == (255, 0, 0)


def test_la_composites_on_white():
    image = Image.new("LA", (4, 4), (0, 0))
    image.putpixel((2, 2), (0, 255))
    decoded = load_image(encode(image, "PNG"))
    assert pixel(decoded) == (255, 255, 255)
    assert pixel(decoded, (2, 2)) == (0, 0, 0)


def test_palette_with_transparency_composites_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((3, 3), 1)
    decoded = load_image(encode(image, "PNG", transparency=0))
    assert pixel(decoded) == (255, 255, 255)
    assert pixel(decoded, (3, 3)) == (0, 0, 255)


def test_palette_without_transparency():
    image = Image.new("RGB", (8, 8), (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert pixel(load_image(encode(image, "PNG"))) == (0, 128, 0)


def test_cmyk_jpeg():
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red
    red, green, blue = pixel(load_image(encode(image, "JPEG", quality=95)))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    values = np.array([[0, 32896], [65535, 257]], dtype=np.uint16)
    decoded = load_image(encode(Image.fromarray(values), "PNG"))
    assert [pixel(decoded, xy)[0] for xy in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 128, 255, 1]


def test_32_bit_integer_tiff_with_16_bit_data():
    values = np.array([[0, 65535]], dtype=np.int32)
    decoded = load_image(encode(Image.fromarray(values, "I"), "TIFF"))
    assert pixel(decoded) == (0, 0, 0) and pixel(decoded, (1, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_and_bilevel(mode):
    image = Image.new(mode, (4, 4), 255)
    assert pixel(load_image(encode(image, "PNG"))) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    red, _, blue = pixel(load_image(data), (4, 4))
    assert red > 200 and blue < 60


def exif_jpeg(size: tuple[int, int], orientation: int) -> bytes:
    image = product_image(3, size=max(size)).resize(size)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=90)


def test_exif_orientation_is_applied():
    decoded = load_image(exif_jpeg((60, 40), orientation=6))
    assert decoded.size == (40, 60)


def test_draft_keeps_size_above_target_and_pixels_close():
    data = encode(product_image(5, size=1024).resize((1024, 768)), "JPEG", quality=92)
    full = load_image(data)
    drafted = load_image(data, target_size=200)
    assert full.size == (1024, 768)
    assert min(drafted.size) >= 200 and drafted.size[0] < 1024
    reference = full.resize(drafted.size, Image.Resampling.BOX)
    difference = np.abs(np.asarray(reference, float) - np.asarray(drafted, float))
    assert difference.mean() < 4


def test_draft_still_applies_exif_orientation():
    decoded = load_image(exif_jpeg((800, 400), orientation=6), target_size=100)
    width, height = decoded.size
    assert height > width and min(decoded.size) >= 100 and height <= 400


def test_target_size_must_be_positive():
    with pytest.raises(ValueError, match="target_size must be > 0; got 0"):
        load_image(product_jpeg(1, size=32), target_size=0)


def test_truncated_jpeg_raises_decode_error():
    data = product_jpeg(2, size=128)
    with pytest.raises(ImageDecodeError, match="truncated") as caught:
        load_image(data[: len(data) // 2])
    assert caught.value.reason.startswith("truncated")


@pytest.mark.parametrize("data", [b"", b"this is not an image at all", b"\x89PNG\r\n\x1a\n"])
def test_garbage_raises_decode_error(data):
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        load_image(data)


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.jpg")


def test_decompression_bomb_guard_stays_active(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # bombs are > 2x this many pixels
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(encode(Image.new("RGB", (64, 64)), "PNG"))
