"""Uploaded query images: decoded once, reduced to the model's size, a few at a time per process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lookalike_core.images import ImageValidationError, image_decode_reduced
from lookalike_core.imaging import to_rgb
from PIL import Image

from similarity.conf import similarity_settings
from similarity.errors import InvalidImageQuery, UploadsBusy

MSG_BUSY = (
    "too many image uploads are being decoded right now ({slots} at a time); "
    "retry in a few seconds"
)

_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None


def _semaphore(size: int) -> threading.BoundedSemaphore:
    """The process's decode slots; recreated only when UPLOAD_CONCURRENCY changes."""
    global _slots
    with _lock:
        if _slots is None or _slots[0] != size:
            _slots = (size, threading.BoundedSemaphore(size))
        return _slots[1]


@contextmanager
def upload_decode_slot() -> Iterator[None]:
    """Hold one of UPLOAD_CONCURRENCY slots; UploadsBusy after UPLOAD_WAIT_SECONDS.

    Decoding a large photo is CPU and memory heavy and the throttle counts requests, not
    their cost: the slots bound how many decode at once, so two big uploads cannot stall
    every other request of the process.
    """
    conf = similarity_settings()
    semaphore = _semaphore(conf.upload_concurrency)
    if not semaphore.acquire(timeout=max(0.0, conf.upload_wait_seconds)):
        raise UploadsBusy(MSG_BUSY.format(slots=conf.upload_concurrency))
    try:
        yield
    finally:
        semaphore.release()


def query_image_decode(*, data: bytes, min_side: int | None) -> Image.Image:
    """An upload's bytes as an upright RGB image whose sides stay >= ``min_side``.

    Decoded once (checked and decoded in the same pass), under UPLOAD_MAX_PIXELS and
    within a decode slot; InvalidImageQuery says what is wrong with the bytes.
    """
    conf = similarity_settings()
    with upload_decode_slot():
        try:
            image = image_decode_reduced(data, max_pixels=conf.upload_max_pixels,
                                         min_side=min_side)
        except ImageValidationError as exc:
            raise InvalidImageQuery(f"image: {exc}") from exc
        return to_rgb(image)
