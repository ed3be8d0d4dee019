"""Download outcomes recorded: counts for the summary, row updates written in batches from
the one thread that collects the workers' results."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from catalog.models import Article, article_image_path
from catalog.progress import ProgressBar
from catalog.services.images import ImageFiles, image_fields

logger = logging.getLogger(__name__)

WRITE_BATCH = 200  # rows per write transaction: few SQLite commits, short locks
MSG_URL_CHANGED = (
    "the new image_url failed, so the previous image (from {old}) is no longer used: {error}"
)
MSG_KEPT = "refresh failed, the previous image is kept: {error}"


@dataclass
class DownloadSummary:
    total: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: int = 0
    stale: int = 0  # image_url changed during the download: result dropped, row left pending
    not_retried: int = 0  # previously failed articles left alone (retry with only_failed)
    kept: int = 0  # of the failed: a refresh of an unchanged URL; the previous image stays
    swept: int = 0  # temp files of interrupted runs removed at the start
    bytes_downloaded: int = 0
    elapsed: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.downloaded / self.elapsed if self.elapsed else 0.0

    @property
    def megabytes(self) -> float:
        return self.bytes_downloaded / 1_000_000

    def __str__(self) -> str:
        stale = f", {self.stale} stale (URL changed meanwhile)" if self.stale else ""
        kept = f" ({self.kept} kept their previous image)" if self.kept else ""
        stale += f", {self.swept} temp files of interrupted runs removed" if self.swept else ""
        return (
            f"{self.downloaded} downloaded, {self.skipped} skipped (unchanged), "
            f"{self.failed} failed{kept}{stale} in {self.elapsed:.1f}s "
            f"({self.images_per_second:.1f} images/s, {self.megabytes:.1f} MB)"
        )


@dataclass(frozen=True)
class Job:
    pk: int
    article_id: str
    url: str
    image_name: str
    sha256: str
    status: str
    downloaded_url: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    job: Job
    skipped: bool = False
    error: str = ""
    kept: bool = False  # the error is a failed refresh; the previous, intact image stays
    image_name: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0
    size: int = 0


class Recorder:
    """Turns outcomes into counts and row updates, written in batches from one thread.

    Every write is conditional on the row still having the URL the job fetched: an import
    (or an admin edit) may change ``image_url`` while the download is in flight, and its
    result must then not be recorded over the newer URL. Such an outcome is counted as
    stale and the row stays pending for the next run.
    """

    def __init__(self, summary: DownloadSummary, files: ImageFiles) -> None:
        self.summary = summary
        self.files = files
        self.succeeded: list[tuple[Outcome, dict[str, object]]] = []
        self.failed: list[tuple[Outcome, dict[str, object]]] = []

    def collect(
        self, futures: Iterable[Future[Outcome]], bar: ProgressBar, strict: bool = True
    ) -> None:
        for future in futures:
            if not strict and (not future.done() or future.exception() is not None):
                continue
            self.add(future.result())  # re-raises a worker's KeyboardInterrupt
            bar.update(1)
        if self.summary.failed:
            bar.set_postfix(failed=self.summary.failed, refresh=False)

    def add(self, outcome: Outcome) -> None:
        job, now = outcome.job, timezone.now()
        if outcome.skipped:
            self.summary.skipped += 1
            return
        if outcome.error:
            self.summary.failed += 1
            self.summary.kept += outcome.kept
            self.summary.failures.append((job.article_id, _failure_text(outcome)))
            self.failed.append((outcome, _failure_values(outcome, now)))
        else:
            self.summary.downloaded += 1
            self.summary.bytes_downloaded += outcome.size
            self.succeeded.append((outcome, {
                **image_fields(name=outcome.image_name, sha256=outcome.sha256,
                               width=outcome.width, height=outcome.height, source_url=job.url,
                               now=now),
                "download_attempts": job.attempts + 1, "updated_at": now,
            }))
        if len(self.succeeded) + len(self.failed) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        # One transaction, one UPDATE per row: 8x cheaper than bulk_update's CASE/WHEN
        # expressions, whose Python work holds the GIL the download threads need.
        old_files: list[str] = []
        stale: list[Outcome] = []
        with transaction.atomic():
            for outcome, values in self.succeeded:
                if self._write(outcome, values):
                    job = outcome.job
                    if job.image_name and job.image_name != outcome.image_name and _is_ours(job):
                        old_files.append(job.image_name)
                else:
                    stale.append(outcome)
            for outcome, values in self.failed:
                if not self._write(outcome, values):
                    stale.append(outcome)
            current_images = self._current_images([o for o in stale if o.image_name])
        # Only now that the rows point at the new files may the old ones go.
        for name in old_files:
            self.files.delete(name)
        for outcome in stale:
            self._drop_stale(outcome, current_images)
        self.succeeded, self.failed = [], []

    @staticmethod
    def _write(outcome: Outcome, values: dict[str, object]) -> bool:
        """Update the row only if it still has the URL that was fetched; False if not."""
        job = outcome.job
        return bool(Article.objects.filter(pk=job.pk, image_url=job.url).update(**values))

    @staticmethod
    def _current_images(outcomes: list[Outcome]) -> dict[int, str]:
        pks = [outcome.job.pk for outcome in outcomes]
        return dict(Article.objects.filter(pk__in=pks).values_list("pk", "image")) if pks else {}

    def _drop_stale(self, outcome: Outcome, current_images: dict[int, str]) -> None:
        """Undo the counts of an outcome whose URL changed meanwhile; drop an orphan file.

        The new file's path comes from the article id and the detected extension, so it may
        have overwritten the file the row still points at (same extension). That is
        harmless: the row is pending (the URL change reset it) and its sha256 no longer
        matches, so the next run downloads it again. A file the row does not point at is an
        orphan and is removed.
        """
        job = outcome.job
        self.summary.stale += 1
        if outcome.error:
            self.summary.failed -= 1
            self.summary.kept -= outcome.kept
            self.summary.failures.remove((job.article_id, _failure_text(outcome)))
        else:
            self.summary.downloaded -= 1
            self.summary.bytes_downloaded -= outcome.size
            if outcome.image_name and current_images.get(job.pk) != outcome.image_name:
                self.files.delete(outcome.image_name)
        logger.info("Dropped the download of %s: image_url changed from %s meanwhile",
                    job.article_id, job.url)


def _is_ours(job: Job) -> bool:
    """The old file is this article's own download (never delete a file we didn't name)."""
    extension = job.image_name.rsplit(".", 1)[-1]
    return job.image_name == article_image_path(job.article_id, extension)


def _failure_text(outcome: Outcome) -> str:
    return MSG_KEPT.format(error=outcome.error) if outcome.kept else outcome.error


def _failure_values(outcome: Outcome, now: object) -> dict[str, object]:
    """Row values for a failed fetch: a kept image records a refresh error only."""
    job = outcome.job
    if outcome.kept:
        return {"refresh_error": outcome.error, "refresh_failed_at": now,
                "download_attempts": job.attempts + 1, "updated_at": now}
    error = outcome.error
    if job.image_name and job.downloaded_url and job.downloaded_url != job.url:
        error = MSG_URL_CHANGED.format(old=job.downloaded_url, error=error)
    return {"download_status": Article.DownloadStatus.FAILED, "download_error": error,
            "refresh_error": "", "refresh_failed_at": None,
            "download_attempts": job.attempts + 1, "updated_at": now}
