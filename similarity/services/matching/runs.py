"""Supplier match runs from the admin: store the upload, queue the task, run it, read it back."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from catalog.tabular import tabular_kind
from similarity.conf import similarity_settings
from similarity.models import MatchRun
from similarity.selectors.validation import validate_k
from similarity.services.matching.photos import MatchSummary, supplier_photos_match
from similarity.services.matching.reports import VERDICTS, MatchRow, report_rows_read
from similarity.services.matching.sources import (
    MatchSourceError,
    zip_extract_safe,
)

logger = logging.getLogger(__name__)

REPORT_NAME = "report.csv"
PHOTOS_FOLDER = "photos"
MSG_UPLOAD_TYPE = (
    "{name}: upload a supplier feed (.csv, .jsonl, .ndjson) or a zip of photos (.zip)"
)


def match_run_directory(*, run: MatchRun) -> Path:
    """The run's private folder under the data dir: the upload, extracted photos, the report."""
    return Path(settings.DATA_DIR) / "matching" / str(run.pk)


def match_run_thumbnails_directory(*, run: MatchRun) -> Path:
    """Where the supplier photos' thumbnails go (under MEDIA_ROOT, so the admin can show them)."""
    return Path(settings.MEDIA_ROOT) / "matching" / str(run.pk)


def match_run_thumbnails_url(*, run: MatchRun) -> str:
    return f"{settings.MEDIA_URL.rstrip('/')}/matching/{run.pk}/"


def match_run_report_path(*, run: MatchRun) -> Path:
    return match_run_directory(run=run) / REPORT_NAME


def match_run_create(*, upload: UploadedFile, k: int = 5, created_by: str = "") -> MatchRun:
    """Store ``upload`` as a new queued run and queue its task once the transaction commits."""
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
        directory = match_run_directory(run=run)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / run.source_file).open("wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)

        def enqueue() -> None:
            task_id = async_task("similarity.tasks.match_run_task", run.pk,
                                 task_name=f"match-run-{run.pk}")
            MatchRun.objects.filter(pk=run.pk, task_id="").update(task_id=str(task_id or ""))

        transaction.on_commit(enqueue)
    return run


def match_run_execute(*, run: MatchRun, progress: bool = False) -> MatchRun:
    """Run a queued run: unpack a zip safely, match, record counts; failures end as failed."""
    conf = similarity_settings()
    MatchRun.objects.filter(pk=run.pk).update(status=MatchRun.Status.RUNNING,
                                              started_at=timezone.now(), error="")
    directory = match_run_directory(run=run)
    try:
        source = directory / run.source_file
        if run.source_kind == MatchRun.SourceKind.ZIP:
            photos = directory / PHOTOS_FOLDER
            shutil.rmtree(photos, ignore_errors=True)
            zip_extract_safe(archive=source, destination=photos,
                             max_files=conf.match_zip_max_files,
                             max_bytes=conf.match_zip_max_bytes)
            source = photos
        summary = supplier_photos_match(
            source=source, output=match_run_report_path(run=run), k=run.k,
            thumbnails_dir=match_run_thumbnails_directory(run=run), progress=progress,
            on_batch=lambda partial: _record(run, partial),
        )
    except Exception as exc:
        logger.exception("Match run #%s failed", run.pk)
        MatchRun.objects.filter(pk=run.pk).update(
            status=MatchRun.Status.FAILED, error=str(exc) or repr(exc),
            finished_at=timezone.now())
    else:
        _record_final(run, summary)
    run.refresh_from_db()
    return run


def _record(run: MatchRun, summary: MatchSummary) -> None:
    counts = summary.counts
    MatchRun.objects.filter(pk=run.pk).update(
        model=summary.model, index_build=summary.index_build,
        duplicate_threshold=summary.duplicate_threshold,
        similar_threshold=summary.similar_threshold,
        duplicate_count=counts["duplicate"], similar_count=counts["similar"],
        new_count=counts["new"], error_count=counts["error"],
        timings={key: round(value, 3) for key, value in summary.timings.items()},
    )


def _record_final(run: MatchRun, summary: MatchSummary) -> None:
    """Counts from the report itself: a retried task resumed it, so it holds every row."""
    _record(run, summary)
    counts = Counter(row.verdict for row in match_run_rows(run=run))
    MatchRun.objects.filter(pk=run.pk).update(
        status=MatchRun.Status.SUCCEEDED, finished_at=timezone.now(),
        duplicate_count=counts["duplicate"], similar_count=counts["similar"],
        new_count=counts["new"], error_count=counts["error"],
    )


def match_run_delete(*, run: MatchRun) -> None:
    """Delete the run's row, its folder under the data dir and its thumbnails."""
    directories = (match_run_directory(run=run), match_run_thumbnails_directory(run=run))
    run.delete()
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def match_run_rows(*, run: MatchRun, verdict: str | None = None) -> Iterator[MatchRow]:
    """The report's rows, optionally of one verdict; nothing before the report exists."""
    path = match_run_report_path(run=run)
    if verdict not in (None, "", *VERDICTS):
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    if not path.exists():
        return
    for row in report_rows_read(path=path):
        if not verdict or row.verdict == verdict:
            yield row


def match_run_csv(*, run: MatchRun, verdict: str | None = None) -> Iterator[str]:
    """The report (or its rows of one verdict) as CSV text, a line at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    path = match_run_report_path(run=run)
    if not path.exists():
        return
    with path.open("r", encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    writer.writerow(header)
    for row in match_run_rows(run=run, verdict=verdict):
        pairs: list[str] = []
        for rank in range(run.k):
            pairs += ([row.matches[rank][0], f"{row.matches[rank][1]:.6f}"]
                      if rank < len(row.matches) else ["", ""])
        writer.writerow([row.supplier_ref, row.verdict, *pairs, row.error, *row.extra.values()])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()
