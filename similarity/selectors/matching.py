"""Supplier match runs (reads): a run's report rows, its CSV export, its thumbnails, all read
from the run's folder in the private "matching" storage."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.files import File
from lookalike_core.match_report import (
    VERDICTS,
    MatchRow,
    report_columns,
    report_csv_values,
    report_rows,
)

from similarity.models import MatchRun
from similarity.storages import match_thumbnail_key, match_thumbnail_name, matching_storage

MSG_BAD_VERDICT = "verdict must be one of {choices}; got {value!r}"


@contextmanager
def _report_text(run: MatchRun) -> Iterator[io.TextIOWrapper | None]:
    """The run's published report as text, None before the first publish."""
    if not run.report_file:
        yield None
        return
    storage = matching_storage()
    name = f"{run.folder}/{run.report_file}"
    if not storage.exists(name):
        yield None
        return
    with storage.open(name, "rb") as handle:
        yield io.TextIOWrapper(handle, encoding="utf-8", newline="")


def match_run_rows(*, run: MatchRun, verdict: str | None = None) -> Iterator[MatchRow]:
    """The report's rows, optionally of one verdict; nothing before a report is published."""
    if verdict not in (None, "", *VERDICTS):
        raise ValueError(MSG_BAD_VERDICT.format(choices=", ".join(VERDICTS), value=verdict))
    with _report_text(run) as text:
        if text is None:
            return
        for row in report_rows(text, kind="csv"):
            if not verdict or row.verdict == verdict:
                yield row


def match_run_csv(*, run: MatchRun, verdict: str | None = None) -> Iterator[str]:
    """The report (or its rows of one verdict) as CSV text, a line at a time, in today's
    columns (a report written before the evidence columns is exported with them empty)."""
    with _report_text(run) as text:
        if text is None:
            return
        header = next(csv.reader(text), [])
    extras = header[header.index("error") + 1:] if "error" in header else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report_columns(k=run.k, extra_columns=extras))
    for row in match_run_rows(run=run, verdict=verdict):
        writer.writerow(report_csv_values(row, k=run.k, extra_columns=extras))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def match_run_thumbnail_name(*, run: MatchRun, supplier_ref: str) -> str:
    """The name of a supplier photo's thumbnail in ``run`` (what the thumbnail view serves)."""
    return match_thumbnail_name(folder=run.folder, supplier_ref=supplier_ref)


def match_run_thumbnail_open(*, run: MatchRun, name: str) -> File:
    """Thumbnail ``name`` of ``run``, opened; FileNotFoundError when it does not exist (or
    ``name`` is not a thumbnail name: nothing else of the folder is served through it)."""
    try:
        key = match_thumbnail_key(folder=run.folder, name=name)
    except ValueError as exc:
        raise FileNotFoundError(name) from exc
    storage = matching_storage()
    if not run.folder or not storage.exists(key):
        raise FileNotFoundError(name)
    return storage.open(key, "rb")
