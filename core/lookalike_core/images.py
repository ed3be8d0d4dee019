"""Image validation shared by downloads and uploads: bytes in, format and size out."""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Pillow format name -> file extension. Widely supported web formats only: TIFF and BMP
# are rare for product photos and bring large, uncompressed or many-codec attack surface.
ALLOWED_FORMATS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}

MSG_EMPTY = "empty body (0 bytes)"
MSG_NOT_AN_IMAGE = "not an image"
MSG_TRUNCATED = "truncated image"
MSG_BOMB = "decompression bomb: {pixels} pixels > limit {limit}"
MSG_FORMAT = "unsupported image format {format}; allowed: {allowed}"
MSG_CORRUPT = "corrupt image: {error}"
MSG_SCANS = "progressive JPEG with more than {limit} scans (decoding cost); refused"

# libjpeg decodes a progressive JPEG once per scan, over the whole image: a small file that
# repeats a scan thousands of times costs minutes of CPU. Encoders write up to ~10 scans
# (libjpeg's default progression; mozjpeg's searched ones stay well under 20).
MAX_JPEG_SCANS = 32

# EXIF orientations that rotate by 90 degrees, swapping width and height on display.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageValidationError(ValueError):
    """The bytes are not an acceptable image; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned: Pillow format, file extension and displayed size."""

    format: str
    ext: str
    width: int
    height: int


def validate_image_bytes(data: bytes, *, max_pixels: int) -> ImageInfo:
    """Check that ``data`` fully decodes as an allowed image of at most ``max_pixels``.

    Every byte is decoded (JPEGs at reduced scale, which still reads the whole stream).
    The pixel limit is checked from the header, before anything is decoded. Pillow's own
    decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, process-wide) stays active as a
    backstop and its error is reported the same way. Width and height are as displayed,
    i.e. after EXIF orientation (the bytes themselves are not changed).
    """
    if not data:
        raise ImageValidationError(MSG_EMPTY)
    formats = tuple(ALLOWED_FORMATS)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            image_format = image.format or ""
            width, height = image.size
            if width * height > max_pixels:
                raise ImageValidationError(
                    MSG_BOMB.format(pixels=width * height, limit=max_pixels)
                )
            _check_png_data_covers_rows(data, image_format)
            _check_jpeg_scans(data, image_format)
            image.verify()
        # verify() leaves the image unusable; decoding every pixel needs a fresh open.
        with Image.open(io.BytesIO(data), formats=formats) as image:
            if image_format == "JPEG":
                # Decode at 1/8 scale: libjpeg still reads every scan to the end (so truncation
                # and broken streams are caught) but skips most of the IDCT work, ~2x faster.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
            orientation = image.getexif().get(0x0112)
    except ImageValidationError:
        raise
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _validation_error(exc, data=data, max_pixels=max_pixels) from exc
    if image_format not in ALLOWED_FORMATS:  # pragma: no cover - Image.open(formats=) filters
        raise ImageValidationError(
            MSG_FORMAT.format(format=image_format, allowed=", ".join(ALLOWED_FORMATS))
        )
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(
        format=image_format, ext=ALLOWED_FORMATS[image_format], width=width, height=height
    )


# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def image_decode_reduced(data: bytes, *, max_pixels: int, min_side: int | None) -> Image.Image:
    """Decode ``data`` once, reduced while decoding so both sides stay >= ``min_side``.

    For uploads: the pixel limit is checked from the header before any pixel is decoded;
    JPEGs decode at a reduced DCT scale (draft), other formats are shrunk by an integer
    factor (``reduce``) right after decoding, so only one full-size buffer ever exists and
    only briefly. The result is upright (EXIF orientation applied), in its own mode.
    Raises ``ImageValidationError`` with the same messages as ``validate_image_bytes``.
    """
    if not data:
        raise ImageValidationError(MSG_EMPTY)
    try:
        with Image.open(io.BytesIO(data), formats=tuple(ALLOWED_FORMATS)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageValidationError(
                    MSG_BOMB.format(pixels=width * height, limit=max_pixels)
                )
            _check_png_data_covers_rows(data, image.format or "")
            _check_jpeg_scans(data, image.format or "")
            if image.format == "JPEG" and min_side:
                image.draft(image.mode, (min_side, min_side))
            image.load()
            orientation = image.getexif().get(0x0112)
            factor = min(image.size) // min_side if min_side else 1
            decoded = _reducible(image).reduce(factor) if factor > 1 else image.copy()
    except ImageValidationError:
        raise
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _validation_error(exc, data=data, max_pixels=max_pixels) from exc
    upright = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return decoded.transpose(upright) if upright is not None else decoded


# Deflate expands at most ~1032:1; the compressed pixel data of a PNG bounds its rows.
_DEFLATE_MAX_RATIO = 1032
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel



def _validation_error(exc: Exception, *, data: bytes, max_pixels: int) -> ImageValidationError:
    """The ImageValidationError that says what Pillow's decoding error ``exc`` means."""
    if isinstance(exc, Image.DecompressionBombError):
        match = _PILLOW_BOMB_PIXELS.search(str(exc))
        pixels = match.group(1) if match else "too many"
        return ImageValidationError(MSG_BOMB.format(pixels=pixels, limit=max_pixels))
    if isinstance(exc, UnidentifiedImageError):
        return ImageValidationError(_unidentified_message(data))
    # Pillow reports a short body as "image file is truncated" or "... not enough data".
    text = str(exc)
    if "truncated" in text.lower() or "not enough data" in text or isinstance(exc, EOFError):
        return ImageValidationError(MSG_TRUNCATED)
    return ImageValidationError(MSG_CORRUPT.format(error=text or type(exc).__name__))

def _check_png_data_covers_rows(data: bytes, image_format: str) -> None:
    """Refuse a PNG whose IDAT chunks are too small to hold the rows its header declares.

    Pillow accepts a complete zlib stream that ends before the last row and leaves the
    missing rows black: a 1 x 25,000,000 header with a few bytes of IDAT "decodes". Walking
    the chunk headers is cheap; the bound is exact only for data no deflate stream can hold,
    and a short stream that could still hold them is not detected.
    """
    if image_format != "PNG" or len(data) < 33:
        return
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    row_bytes = -(-width * bit_depth * _PNG_CHANNELS.get(colour_type, 1) // 8)
    idat_bytes, offset = 0, 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            idat_bytes += length
        elif kind == b"IEND":
            break
        offset += 12 + length
    if height * row_bytes > (idat_bytes + 64) * _DEFLATE_MAX_RATIO:
        raise ImageValidationError(MSG_TRUNCATED)


def jpeg_scan_count(data: bytes, *, stop_after: int | None = None) -> int:
    """How many scans (SOS markers) the JPEG stream ``data`` holds, read from its markers
    without decoding; stops counting past ``stop_after``.

    Segments with a length are skipped whole; after each SOS the entropy-coded data is
    skipped to the next marker (0xFF not followed by a stuffed 0x00 or a restart marker).
    """
    scans, offset, size = 0, 2, len(data)
    while offset + 4 <= size:
        if data[offset] != 0xFF:
            offset = data.find(b"\xff", offset)
            if offset < 0:
                break
            continue
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            offset += 2
            continue
        length = (data[offset + 2] << 8) | data[offset + 3]
        offset += 2 + length
        if marker != 0xDA:  # SOS: entropy-coded data follows its header
            continue
        scans += 1
        if stop_after is not None and scans > stop_after:
            return scans
        offset = _entropy_end(data, offset)
    return scans


def _entropy_end(data: bytes, offset: int) -> int:
    """The offset of the first marker after entropy-coded data starting at ``offset``."""
    while True:
        offset = data.find(b"\xff", offset)
        if offset < 0 or offset + 1 >= len(data):
            return len(data)
        following = data[offset + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            offset += 1 if following == 0xFF else 2
            continue
        return offset


def _check_jpeg_scans(data: bytes, image_format: str) -> None:
    """Refuse a JPEG with more than MAX_JPEG_SCANS scans, before any pixel is decoded."""
    if image_format == "JPEG" and jpeg_scan_count(data, stop_after=MAX_JPEG_SCANS) > MAX_JPEG_SCANS:
        raise ImageValidationError(MSG_SCANS.format(limit=MAX_JPEG_SCANS))


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode ``Image.reduce`` supports: palette, 1-bit and 16-bit grey are not.

    Palette images become RGB (RGBA when they have a transparent colour, composited on white
    later like every upload); 16-bit grey is scaled to 8 bits, not clipped (as the embedders'
    own conversion does).
    """
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode.startswith("I;16"):
        return image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    return image


def _unidentified_message(data: bytes) -> str:
    """Say what the data looks like when Pillow recognises no allowed format."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return f"{MSG_NOT_AN_IMAGE} (HTML page)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            detected = image.format
    except Exception:
        detected = None
    if detected:
        return MSG_FORMAT.format(format=detected, allowed=", ".join(ALLOWED_FORMATS))
    return f"{MSG_NOT_AN_IMAGE} (unrecognised data)"

