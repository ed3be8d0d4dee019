"""Photos from outside (uploads, image_url queries and batch items, supplier photos): decoded
once, reduced to the model's size, under the pixel and scan limits, a few at a time per process."""

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
def upload_decode_slot(*, wait: bool = False) -> Iterator[None]:
    """Hold one of UPLOAD_CONCURRENCY slots; UploadsBusy after UPLOAD_WAIT_SECONDS (or, with
    ``wait``, for background work such as supplier photos, as long as it takes).

    Decoding a large photo is CPU and memory heavy and the throttle counts requests, not
    their cost: the slots bound how many decode at once, so two big uploads cannot stall
    every other request of the process.
    """
    conf = similarity_settings()
    semaphore = _semaphore(conf.upload_concurrency)
    if wait:
        semaphore.acquire()
    elif not semaphore.acquire(timeout=max(0.0, conf.upload_wait_seconds)):
        raise UploadsBusy(MSG_BUSY.format(slots=conf.upload_concurrency))
    try:
        yield
    finally:
        semaphore.release()


def photo_decode(
    *, data: bytes, min_side: int | None, max_pixels: int, wait: bool = False
) -> Image.Image:
    """The one decode path of photos from outside: ``data`` as an upright RGB image whose
    sides stay >= ``min_side``, decoded once (checked and decoded in the same pass) within
    a decode slot, under ``max_pixels`` and the JPEG scan limit (lookalike_core.images).

    ImageValidationError says what is wrong with the bytes; UploadsBusy when no slot frees
    in time (unless ``wait``).
    """
    with upload_decode_slot(wait=wait):
        return to_rgb(image_decode_reduced(data, max_pixels=max_pixels, min_side=min_side))


def query_image_decode(*, data: bytes, min_side: int | None) -> Image.Image:
    """An upload's bytes as a query image (``photo_decode`` under UPLOAD_MAX_PIXELS);
    InvalidImageQuery says what is wrong with the bytes."""
    try:
        return photo_decode(data=data, min_side=min_side,
                            max_pixels=similarity_settings().upload_max_pixels)
    except ImageValidationError as exc:
        raise InvalidImageQuery(f"image: {exc}") from exc
