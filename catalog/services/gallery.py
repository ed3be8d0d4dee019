"""Additional article images (``ArticleImage``): downloaded by the same run as primary images.

The same rules as for the primary image (``downloads``): the same guarded session, limits
and validation, a temp file committed over the final name only once valid, rows written
only while they still have the URL that was fetched (an import may change it meanwhile),
failures recorded with their reason. A failed additional image never takes its article out
of the index: the article is searched by the images it has.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Article, ArticleImage, article_image_path
from catalog.services.download_records import DownloadSummary
from catalog.services.fetching import DownloadCancelled, ImageFetchError, fetch_image
from catalog.services.images import ImageFiles

logger = logging.getLogger(__name__)

MSG_STORE = "could not store the image: {error}"
WRITE_BATCH = 200


@dataclass(frozen=True)
class GalleryJob:
    pk: int
    article_id: str
    position: int
    url: str
    image_name: str
    sha256: str
    status: str
    downloaded_url: str
    attempts: int


@dataclass(frozen=True)
class GalleryLimits:
    timeout: float
    max_bytes: int
    max_pixels: int


def gallery_jobs(
    *, article_ids: Sequence[str] | None, force: bool, only_failed: bool
) -> list[GalleryJob]:
    """The additional images of active articles that may need a download (pending, failed
    with ``only_failed`` or ``force``, downloaded ones are checked for intactness)."""
    images = ArticleImage.objects.filter(article__is_active=True)
    if article_ids is not None:
        images = images.filter(article__article_id__in=list(article_ids))
    failed = Q(download_status=Article.DownloadStatus.FAILED)
    if only_failed:
        images = images.filter(failed)
    elif not force:
        images = images.exclude(failed)
    rows = images.order_by("pk").values_list(
        "pk", "article__article_id", "position", "url", "image", "image_sha256",
        "download_status", "downloaded_url", "download_attempts",
    )
    return [GalleryJob(*row) for row in rows]


def gallery_download(
    jobs: list[GalleryJob],
    *,
    session: requests.Session,
    files: ImageFiles,
    limits: GalleryLimits,
    workers: int,
    force: bool,
    summary: DownloadSummary,
    cancel: threading.Event,
) -> None:
    """Fetch ``jobs`` in ``workers`` threads; counts go into ``summary`` (failures are named
    ``<article_id> image <position>``), rows are written from this thread in batches."""
    summary.total += len(jobs)
    done: list[tuple[GalleryJob, dict[str, object], int]] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gallery") as pool:
        try:
            for job, values, size in pool.map(
                lambda job: _one(job, session=session, files=files, limits=limits,
                                 force=force, cancel=cancel),
                jobs,
            ):
                if values is None:
                    summary.skipped += 1
                    continue
                done.append((job, values, size))
                if len(done) >= WRITE_BATCH:
                    _record(done, summary)
                    done = []
        except BaseException:
            cancel.set()
            raise
        finally:
            _record(done, summary)


def _one(
    job: GalleryJob, *, session: requests.Session, files: ImageFiles, limits: GalleryLimits,
    force: bool, cancel: threading.Event,
) -> tuple[GalleryJob, dict[str, object] | None, int]:
    """Worker: (job, row values or None when the stored file is intact, bytes fetched)."""
    if cancel.is_set():
        raise DownloadCancelled
    if not force and _is_intact(job, files):
        return job, None, 0
    now = timezone.now()
    try:
        with files.temp_file(job.article_id, job.position) as temp:
            fetched = fetch_image(session, job.url, timeout=limits.timeout,
                                  max_bytes=limits.max_bytes, max_pixels=limits.max_pixels,
                                  cancel=cancel, sink=temp.write)
            name = article_image_path(job.article_id, fetched.ext, job.position)
            files.commit(temp, name)
    except ImageFetchError as exc:
        return job, _failed(job, str(exc)), 0
    except OSError as exc:
        return job, _failed(job, MSG_STORE.format(error=exc)), 0
    return job, {
        "image": name, "image_sha256": fetched.sha256, "image_width": fetched.width,
        "image_height": fetched.height, "downloaded_url": job.url,
        "download_status": Article.DownloadStatus.DOWNLOADED, "download_error": "",
        "downloaded_at": now, "download_attempts": job.attempts + 1,
    }, len(fetched.data)


def _failed(job: GalleryJob, error: str) -> dict[str, object]:
    return {"download_status": Article.DownloadStatus.FAILED, "download_error": error,
            "download_attempts": job.attempts + 1}


def _record(done: list[tuple[GalleryJob, dict[str, object], int]],
            summary: DownloadSummary) -> None:
    """Write the outcomes whose row still has the fetched URL; the others count as stale."""
    with transaction.atomic():
        for job, values, size in done:
            written = ArticleImage.objects.filter(pk=job.pk, url=job.url).update(**values)
            if not written:
                summary.stale += 1
            elif values["download_status"] == Article.DownloadStatus.FAILED:
                summary.failed += 1
                summary.failures.append(
                    (f"{job.article_id} image {job.position}", str(values["download_error"]))
                )
            else:
                summary.downloaded += 1
                summary.bytes_downloaded += size


def _is_intact(job: GalleryJob, files: ImageFiles) -> bool:
    if job.status != Article.DownloadStatus.DOWNLOADED or job.downloaded_url != job.url:
        return False
    if not job.image_name or not job.sha256:
        return False
    try:
        with files.open(job.image_name) as handle:
            digest = hashlib.file_digest(handle, "sha256")  # type: ignore[arg-type]
            return digest.hexdigest() == job.sha256
    except OSError:
        return False
