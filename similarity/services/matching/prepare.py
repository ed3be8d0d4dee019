"""Supplier photos made ready to embed: fetched (or read), decoded for the model, a thumbnail
kept; in a thread pool, one batch ahead of the one being embedded."""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import requests
from lookalike_core.images import ImageValidationError
from lookalike_core.localfiles import local_file_read
from lookalike_core.sources import SupplierRow
from PIL import Image

from catalog.conf import catalog_settings
from catalog.services.fetching import ImageFetchError, download_session, fetch_bytes
from similarity.selectors.uploads import photo_decode

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 240

MSG_TOO_LARGE = "image too large: > {max_bytes} bytes"
MSG_UNREADABLE = "could not read the file: {error}"

# Where a small JPEG of each photo goes: (supplier_ref, JPEG bytes). A match run keeps them
# in its folder of the "matching" storage; the command keeps none.
Thumbnails = Callable[[str, bytes], None]


@dataclass
class Photo:
    """A row after fetching and decoding: the image to embed, or why there is none."""

    row: SupplierRow
    image: Image.Image | None = None
    error: str = ""


@dataclass
class PhotoFetcher:
    """Fetches and decodes rows in a pool of ``workers`` threads, a batch at a time."""

    prepare: Callable[[SupplierRow], Photo]
    session: requests.Session
    workers: int

    def close(self) -> None:
        self.session.close()


def photo_fetcher(
    *, batch_size: int, workers: int | None, allow_private: bool | None, min_side: int | None,
    thumbnails: Thumbnails | None,
) -> PhotoFetcher:
    """The catalog downloader's limits (size, pixels, time, retries, private addresses refused
    unless ``allow_private`` / DOWNLOAD_ALLOW_PRIVATE) applied to supplier photos."""
    conf = catalog_settings()
    Image.MAX_IMAGE_PIXELS = conf.download_max_pixels
    workers = max(1, min(workers or conf.download_workers, batch_size))
    session = download_session(
        workers=workers, retries=conf.download_retries,
        allow_private=conf.download_allow_private if allow_private is None else allow_private,
    )
    prepare = partial(
        photo_prepare, session=session, timeout=conf.download_timeout,
        max_bytes=conf.download_max_bytes, max_pixels=conf.download_max_pixels,
        min_side=min_side, thumbnails=thumbnails,
    )
    return PhotoFetcher(prepare=prepare, session=session, workers=workers)


def prefetch(
    rows: Iterator[SupplierRow], *, pool: ThreadPoolExecutor,
    prepare: Callable[[SupplierRow], Photo], batch_size: int,
) -> list[Future[Photo]]:
    """Start fetching and decoding the next ``batch_size`` rows in the pool."""
    return [pool.submit(prepare, row) for row in itertools.islice(rows, batch_size)]


def photo_prepare(
    row: SupplierRow, *, session: requests.Session, timeout: float, max_bytes: int,
    max_pixels: int, min_side: int | None, thumbnails: Thumbnails | None,
) -> Photo:
    """Worker: fetch (or read) one photo and decode it for the model; never raises."""
    if row.error:
        return Photo(row, error=row.error)
    try:
        if row.path is not None:
            data = local_file_read(row.path, max_bytes=max_bytes)
        else:
            data, _content_type = fetch_bytes(session, row.image_url, timeout=timeout,
                                              max_bytes=max_bytes)
        side = max(min_side or 0, THUMBNAIL_SIDE) if thumbnails else min_side
        # The API's decode path and slots: one decode, under the pixel and scan limits.
        image = photo_decode(data=data, max_pixels=max_pixels, min_side=side, wait=True)
        if thumbnails is not None:
            thumbnails(row.supplier_ref, thumbnail_jpeg(image))
    except (ImageFetchError, ImageValidationError) as exc:
        return Photo(row, error=str(exc))
    except OSError as exc:
        return Photo(row, error=MSG_UNREADABLE.format(error=exc))
    except Exception as exc:  # a bug must not stop the batch; logged and reported
        logger.exception("Unexpected error preparing supplier photo %s", row.supplier_ref)
        return Photo(row, error=f"unexpected error: {exc!r}")
    return Photo(row, image=image)


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """A JPEG of ``image`` no larger than THUMBNAIL_SIDE on either side."""
    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    thumbnail.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
