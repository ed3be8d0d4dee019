"""Supplier match runs from the admin: store the upload, queue the task, run it, delete it.

Everything a run keeps is in its folder of the "matching" storage (``similarity.storages``):
the upload, the published report, the thumbnails. So a web node stores the upload and any
worker runs it, as with images and builds (docs/scaling.md). The worker matches in a local
work directory (the source fetched, a zip extracted, the report written a line at a time)
and publishes the report to the storage as it goes; a retried task resumes it from there.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from lookalike_core.match_report import report_rows_read
from lookalike_core.sources import MatchSourceError, zip_extract_safe
from lookalike_core.tabular import tabular_kind

from similarity.conf import similarity_settings
from similarity.models import MatchRun
from similarity.selectors.validation import validate_k
from similarity.services.matching.photos import MatchSummary, supplier_photos_match
from similarity.services.matching.prepare import Thumbnails
from similarity.storages import (
    match_run_folder_new,
    match_thumbnail_key,
    match_thumbnail_name,
    matching_storage,
    storage_file_replace,
    storage_folder_delete,
)

logger = logging.getLogger(__name__)

WORK_DIR = "matching-work"  # under DATA_DIR: this machine's copy of the runs it works on
REPORT_NAME = "report.csv"  # the local report; published as report-<random>.csv
PHOTOS_FOLDER = "photos"
REPORT_PUBLISH_SECONDS = 10.0  # how often a running run's report reaches the storage
MSG_UPLOAD_TYPE = (
    "{name}: upload a supplier feed (.csv, .jsonl, .ndjson) or a zip of photos (.zip)"
)


def match_run_create(*, upload: UploadedFile, k: int = 5, created_by: str = "") -> MatchRun:
    """Store ``upload`` in a new run's folder and queue its task once the transaction commits."""
    from django_q.tasks import async_task

    name = Path(upload.name or "upload").name
    suffix = Path(name).suffix.lower()
    if suffix == ".zip":
        kind = MatchRun.SourceKind.ZIP
    elif tabular_kind(Path(name)) is not None:
        kind = MatchRun.SourceKind.FEED
    else:
        raise MatchSourceError(MSG_UPLOAD_TYPE.format(name=name))
    k = validate_k(k)
    with transaction.atomic():
        run = MatchRun.objects.create(source_name=name, source_kind=kind, k=k,
                                      created_by=created_by, source_file=f"source{suffix}")
        run.folder = match_run_folder_new(run.pk)
        run.save(update_fields=["folder"])
        storage_file_replace(storage=matching_storage(), name=f"{run.folder}/{run.source_file}",
                             content=upload)

        def enqueue() -> None:
            task_id = async_task("similarity.tasks.match_run_task", run.pk,
                                 task_name=f"match-run-{run.pk}")
            MatchRun.objects.filter(pk=run.pk, task_id="").update(task_id=str(task_id or ""))

        transaction.on_commit(enqueue)
    return run


def match_run_execute(*, run: MatchRun, progress: bool = False) -> MatchRun:
    """Run a queued run: fetch its upload, unpack a zip safely, match, publish the report,
    record counts; any failure ends the run as failed with its reason."""
    MatchRun.objects.filter(pk=run.pk).update(status=MatchRun.Status.RUNNING,
                                              started_at=timezone.now(), error="")
    work = _work_directory(run)
    publisher = _ReportPublisher(run, work / REPORT_NAME)
    try:
        source = _source_ready(run, work)
        publisher.fetch_published()
        summary = supplier_photos_match(
            source=source, output=publisher.path, k=run.k, thumbnails=_thumbnails(run),
            progress=progress, on_batch=lambda partial: _batch_done(run, partial, publisher),
        )
        publisher.publish()
    except Exception as exc:
        logger.exception("Match run #%s failed", run.pk)
        _publish_what_is_done(publisher)
        MatchRun.objects.filter(pk=run.pk).update(
            status=MatchRun.Status.FAILED, error=str(exc) or repr(exc),
            finished_at=timezone.now())
    else:
        _record_final(run, summary, publisher.path)
        shutil.rmtree(work, ignore_errors=True)  # the storage holds what the run keeps
    run.refresh_from_db()
    return run


def _work_directory(run: MatchRun) -> Path:
    return similarity_settings().data_dir / WORK_DIR / run.folder


def _source_ready(run: MatchRun, work: Path) -> Path:
    """The run's source on this machine: the upload fetched from the storage, and a zip
    extracted (safely: ``zip_extract_safe``) beside it."""
    conf = similarity_settings()
    work.mkdir(parents=True, exist_ok=True)
    source = work / run.source_file
    if not source.is_file():
        with matching_storage().open(f"{run.folder}/{run.source_file}", "rb") as upload:
            temp = source.with_name(f".{source.name}.tmp")
            with temp.open("wb") as handle:
                shutil.copyfileobj(upload, handle)
            temp.replace(source)
    if run.source_kind != MatchRun.SourceKind.ZIP:
        return source
    photos = work / PHOTOS_FOLDER
    shutil.rmtree(photos, ignore_errors=True)
    zip_extract_safe(archive=source, destination=photos, max_files=conf.match_zip_max_files,
                     max_bytes=conf.match_zip_max_bytes)
    return photos


def _thumbnails(run: MatchRun) -> Thumbnails:
    """Where the run's thumbnails go: its folder in the storage, under unguessable names."""
    storage = matching_storage()

    def save(supplier_ref: str, jpeg: bytes) -> None:
        name = match_thumbnail_name(folder=run.folder, supplier_ref=supplier_ref)
        key = match_thumbnail_key(folder=run.folder, name=name)
        storage_file_replace(storage=storage, name=key, content=ContentFile(jpeg))

    return save


class _ReportPublisher:
    """Copies the local report to the run's folder under a new name, then points the run at
    it (a reader never sees a half-copied report), and deletes versions before the previous
    one (a reader may still be reading that)."""

    def __init__(self, run: MatchRun, path: Path) -> None:
        self.run = run
        self.path = path
        self._published = [run.report_file] if run.report_file else []
        self._last = 0.0

    def fetch_published(self) -> None:
        """Resume from the published report when this machine has no report of the run."""
        if self.path.exists() or not self._published:
            return
        name = f"{self.run.folder}/{self._published[-1]}"
        storage = matching_storage()
        if storage.exists(name):
            with storage.open(name, "rb") as published, self.path.open("wb") as handle:
                shutil.copyfileobj(published, handle)

    def publish_due(self) -> None:
        if time.monotonic() - self._last >= REPORT_PUBLISH_SECONDS:
            self.publish()

    def publish(self) -> None:
        if not self.path.exists():
            return
        storage = matching_storage()
        report_file = f"report-{uuid.uuid4().hex[:12]}.csv"
        with self.path.open("rb") as handle:
            storage_file_replace(storage=storage, name=f"{self.run.folder}/{report_file}",
                                 content=File(handle, name=report_file))
        MatchRun.objects.filter(pk=self.run.pk).update(report_file=report_file)
        self._published.append(report_file)
        for stale in self._published[:-2]:
            storage.delete(f"{self.run.folder}/{stale}")
        self._published = self._published[-2:]
        self._last = time.monotonic()


def _publish_what_is_done(publisher: _ReportPublisher) -> None:
    """After a failure, the rows matched so far reach the storage (the review page shows
    them, a retry resumes from them), if the storage itself is not what failed."""
    try:
        publisher.publish()
    except Exception:
        logger.warning("Could not publish the partial report of run #%s", publisher.run.pk,
                       exc_info=True)


def _batch_done(run: MatchRun, summary: MatchSummary, publisher: _ReportPublisher) -> None:
    _record(run, summary)
    publisher.publish_due()


def _record(run: MatchRun, summary: MatchSummary) -> None:
    counts = summary.counts
    MatchRun.objects.filter(pk=run.pk).update(
        model=summary.model, index_build=summary.index_build,
        duplicate_threshold=summary.duplicate_threshold,
        similar_threshold=summary.similar_threshold, verified=summary.verified,
        same_count=counts["same"], similar_count=counts["similar"],
        new_count=counts["new"], error_count=counts["error"],
        timings={key: round(value, 3) for key, value in summary.timings.items()},
    )


def _record_final(run: MatchRun, summary: MatchSummary, report: Path) -> None:
    """Counts from the report itself: a retried task resumed it, so it holds every row."""
    _record(run, summary)
    counts = Counter(row.verdict for row in report_rows_read(path=report))
    MatchRun.objects.filter(pk=run.pk).update(
        status=MatchRun.Status.SUCCEEDED, finished_at=timezone.now(),
        same_count=counts["same"], similar_count=counts["similar"],
        new_count=counts["new"], error_count=counts["error"],
    )


def match_run_delete(*, run: MatchRun) -> None:
    """Delete the run's row, its folder in the storage and this machine's work directory."""
    folder, work = run.folder, _work_directory(run) if run.folder else None
    run.delete()
    if folder:
        storage_folder_delete(storage=matching_storage(), folder=folder)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
