"""Download article images concurrently: fetch, validate, store atomically, record the result.

The run: which articles need a download, a bounded pool of fetching threads, and the
recorder (``download_records``) that writes outcomes from this thread in batches.

Files: each body streams into a ``.download-*.tmp`` file beside its final name, fsynced and
renamed once valid; temp files that interrupted runs left behind (older than a minute, so a
concurrent run's live ones survive) are swept at the start. Rows are updated only after
their file is in place, in batches from this thread only, and an old file with another
extension is removed only after the new row is saved.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial

import requests
from PIL import Image

from catalog.conf import catalog_settings
from catalog.models import Article, ArticlePk, article_image_path
from catalog.progress import ProgressBar, progress_bar
from catalog.services.download_records import DownloadSummary, Job, Outcome, Recorder
from catalog.services.fetching import (
    DEFAULT_BACKOFF_FACTOR,
    DownloadCancelled,
    ImageFetchError,
    download_session,
    fetch_image,
)
from catalog.services.gallery import GalleryLimits, gallery_download, gallery_jobs
from catalog.services.images import ImageFiles

logger = logging.getLogger(__name__)

__all__ = ["DownloadSummary", "images_download"]

JOB_CHUNK = 1000  # rows read per query when feeding the pool
MSG_STORE = "could not store the image: {error}"


def images_download(
    *,
    workers: int | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    force: bool = False,
    only_failed: bool = False,
    article_ids: Sequence[str] | None = None,
    progress: bool = True,
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
    allow_private: bool | None = None,
) -> DownloadSummary:
    """Download the images of active articles that need it; return counts and failures.

    Additional images (``ArticleImage``) follow the primary ones in the same run, by the
    same rules (``catalog.services.gallery``); the counts cover both.

    Fetched: pending articles, and downloaded ones whose ``image_url`` changed or whose file
    is missing or no longer matches ``image_sha256`` (checked without any HTTP request).
    Failed articles are retried only with ``only_failed`` (or ``force``, which re-downloads
    every active article). Each fetch increments ``download_attempts``.

    A failed refresh of an unchanged URL (``force``) whose previous file is intact keeps
    the article downloaded, with that image (it stays searchable); the failure goes to
    ``refresh_error``/``refresh_failed_at``. Any other failure marks the article failed
    with the reason in ``download_error`` (saying so when a changed URL took the previous
    image out of use); the old file stays on disk and in ``image`` until a later success
    replaces it (the module docstring says how files are written). A result for an article
    whose ``image_url`` changed meanwhile (an import ran) is not recorded: it is counted as
    stale and the row stays pending. Ctrl-C
    cancels queued work, records downloads already on disk, and leaves no temp files.
    ``Image.MAX_IMAGE_PIXELS`` is set process-wide to the configured pixel limit so
    Pillow's own decompression-bomb guard backs up the explicit check.

    Private addresses (loopback, RFC 1918, link-local, ...) are refused at connect time on
    every hop unless ``allow_private`` (default: the DOWNLOAD_ALLOW_PRIVATE setting).
    """
    conf = catalog_settings()
    workers = conf.download_workers if workers is None else workers
    retries = conf.download_retries if retries is None else retries
    timeout = conf.download_timeout if timeout is None else timeout
    _validate_options(workers=workers, retries=retries, timeout=timeout, force=force,
                      only_failed=only_failed, backoff_factor=backoff_factor)
    files = ImageFiles()
    files.check_writable()
    Image.MAX_IMAGE_PIXELS = conf.download_max_pixels
    allow_private = conf.download_allow_private if allow_private is None else allow_private

    started = time.perf_counter()
    swept = files.sweep()
    pks, not_retried = _candidates(article_ids=article_ids, force=force, only_failed=only_failed)
    summary = DownloadSummary(total=len(pks), swept=swept, not_retried=not_retried)
    cancel = threading.Event()
    session = download_session(workers=workers, retries=retries, backoff_factor=backoff_factor,
                               allow_private=allow_private)
    work = partial(
        _download_one, session=session, files=files, force=force, timeout=timeout,
        max_bytes=conf.download_max_bytes, max_pixels=conf.download_max_pixels, cancel=cancel,
    )
    recorder = Recorder(summary, files)
    bar = progress_bar(total=len(pks), unit="img", desc="Downloading images", enabled=progress)
    try:
        _pool_run(_jobs(pks), work, recorder, bar, workers=workers, cancel=cancel)
        recorder.flush()
        bar.close()
        gallery_download(
            gallery_jobs(article_ids=article_ids, force=force, only_failed=only_failed),
            session=session, files=files, workers=workers, force=force, summary=summary,
            cancel=cancel, limits=GalleryLimits(timeout=timeout, max_bytes=conf.download_max_bytes,
                                                max_pixels=conf.download_max_pixels),
        )
    finally:
        recorder.flush()
        bar.close()
        session.close()
    summary.elapsed = time.perf_counter() - started
    return summary


def _candidates(
    *, article_ids: Sequence[str] | None, force: bool, only_failed: bool
) -> tuple[list[ArticlePk], int]:
    """The pks of the active articles to look at, in order, and how many failed ones are
    left alone (retried only with ``only_failed``; ``force`` takes them all)."""
    queryset = Article.objects.filter(is_active=True)
    if article_ids is not None:
        queryset = queryset.filter(article_id__in=list(article_ids))
    failed = queryset.filter(download_status=Article.DownloadStatus.FAILED)
    if only_failed:
        queryset = failed
    elif not force:
        queryset = queryset.exclude(download_status=Article.DownloadStatus.FAILED)
    pks = list(queryset.order_by("pk").values_list("pk", flat=True))
    return pks, 0 if only_failed or force else failed.count()


def _pool_run(
    jobs: Iterator[Job], work: Callable[[Job], Outcome], recorder: Recorder, bar: ProgressBar,
    *, workers: int, cancel: threading.Event,
) -> None:
    """Run ``work`` on every job in a bounded pool (memory stays flat), recording outcomes
    as they complete. On any interruption queued work is cancelled and the downloads that
    completed are recorded rather than redone."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-download")
    in_flight: set[Future[Outcome]] = set()
    try:
        for job in jobs:
            in_flight.add(pool.submit(work, job))
            if len(in_flight) >= workers * 4:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                recorder.collect(done, bar)
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            recorder.collect(done, bar)
    except BaseException:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        recorder.collect((f for f in in_flight if not f.cancelled()), bar, strict=False)
        raise
    finally:
        pool.shutdown(wait=True)


def _download_one(
    job: Job, *, session: requests.Session, files: ImageFiles, force: bool, timeout: float,
    max_bytes: int, max_pixels: int, cancel: threading.Event,
) -> Outcome:
    """Worker: skip an intact file, else fetch and store. No database access here."""
    if cancel.is_set():
        raise DownloadCancelled
    intact: bool | None = None if force else _is_intact(job, files)
    if intact:
        return Outcome(job, skipped=True)
    try:
        with files.temp_file(job.article_id) as temp:
            fetched = fetch_image(session, job.url, timeout=timeout, max_bytes=max_bytes,
                                  max_pixels=max_pixels, cancel=cancel, sink=temp.write)
            name = article_image_path(job.article_id, fetched.ext)
            files.commit(temp, name)
    except ImageFetchError as exc:
        error = str(exc)
    except OSError as exc:
        error = MSG_STORE.format(error=exc)
    except DownloadCancelled:
        raise
    except Exception as exc:  # a bug must not stop the batch; it is logged and recorded
        logger.exception("Unexpected error downloading %s from %s", job.article_id, job.url)
        error = f"unexpected error: {exc!r}"
    else:
        error = ""
    if error:
        # Nothing was written over the previous file (temp files only), so it may still be good.
        kept = _is_intact(job, files) if intact is None else intact
        return Outcome(job, error=error, kept=kept)
    return Outcome(job, image_name=name, sha256=fetched.sha256, width=fetched.width,
                    height=fetched.height, size=len(fetched.data))


def _jobs(pks: list[int]) -> Iterator[Job]:
    fields = ("pk", "article_id", "image_url", "image", "image_sha256", "download_status",
              "downloaded_url", "download_attempts")
    for start in range(0, len(pks), JOB_CHUNK):
        rows = Article.objects.filter(pk__in=pks[start:start + JOB_CHUNK]).order_by("pk")
        for row in rows.values_list(*fields):
            yield Job(*row)


def _is_intact(job: Job, files: ImageFiles) -> bool:
    """Downloaded from the current URL, and the file on disk still has the recorded sha256."""
    if job.status != Article.DownloadStatus.DOWNLOADED or job.downloaded_url != job.url:
        return False
    if not job.image_name or not job.sha256:
        return False
    try:
        with files.open(job.image_name) as handle:
            # Django's File proxies readinto to the file it wraps; its stubs do not say so.
            digest = hashlib.file_digest(handle, "sha256")  # type: ignore[arg-type]
            return digest.hexdigest() == job.sha256
    except OSError:
        return False


def _validate_options(
    *, workers: int, retries: int, timeout: float, force: bool, only_failed: bool,
    backoff_factor: float,
) -> None:
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0; got {retries}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds; got {timeout}")
    if backoff_factor < 0:
        raise ValueError(f"backoff_factor must be >= 0; got {backoff_factor}")
    if force and only_failed:
        raise ValueError("force and only_failed exclude each other (force includes failed)")
