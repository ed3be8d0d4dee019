"""Hostile images for tests and benchmarks: a progressive JPEG that repeats a scan."""

from __future__ import annotations

import io

from demo.sample_images import product_image


def scan_bomb_jpeg(*, scans: int, size: int = 256, seed: int = 3) -> bytes:
    """A valid progressive JPEG of ``size`` px whose smallest scan is repeated up to ``scans``
    scans: libjpeg decodes the whole image once per scan, so the cost grows with ``scans``
    while the file stays small."""
    buffer = io.BytesIO()
    product_image(seed, size=size).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    spans, offset = [], data.find(b"\xff\xda")
    while data[offset:offset + 2] == b"\xff\xda":
        length = (data[offset + 2] << 8) | data[offset + 3]
        end = _next_marker(data, offset + 2 + length)
        spans.append((offset, end))
        offset = end
    smallest = min(spans, key=lambda span: span[1] - span[0])
    repeated = data[smallest[0]:smallest[1]] * max(0, scans - len(spans))
    return data[:spans[-1][1]] + repeated + b"\xff\xd9"


def _next_marker(data: bytes, offset: int) -> int:
    while True:
        offset = data.find(b"\xff", offset)
        following = data[offset + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            offset += 2
            continue
        if following == 0xFF:
            offset += 1
            continue
        return offset
