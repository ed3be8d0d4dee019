"""Match a supplier's photos against the server's catalog, embedding them here.

Reader (the core's supplier sources: a folder or a CSV / JSON Lines feed) -> read or fetch
and decode in threads (the core's decode, as the server decodes) -> embed with the server's
model (``model.LocalModel``) -> vectors to ``POST /api/similar/batch/`` -> verdicts by the
server's thresholds -> the core's report writer (the report ``manage.py match_images``
writes: same columns, verdicts, resumability). Only vectors leave this machine, and with
``verify`` the photos whose verdict is ``similar``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import requests
from lookalike_core.images import ImageValidationError, image_decode_reduced
from lookalike_core.imaging import to_rgb
from lookalike_core.match_report import (
    ERROR,
    NEW,
    SAME,
    SIMILAR,
    MatchRow,
    ReportWriter,
    report_format,
    verdict_for,
)
from lookalike_core.sources import SupplierRow, pending_rows, supplier_source_open
from PIL import Image

from lookalike_client.model import LocalModel, local_model
from lookalike_client.server import ClientError, ModelChanged, Server

MAX_BYTES = 20 * 1024 * 1024  # the server's DOWNLOAD_MAX_BYTES default
MAX_PIXELS = 64_000_000  # the server's DOWNLOAD_MAX_PIXELS default
FETCH_TIMEOUT = 30.0
MSG_TOO_LARGE = "image too large: > {max_bytes} bytes"
MSG_UNREADABLE = "could not read the file: {error}"
MSG_FETCH = "download failed: {error}"
MSG_BAD_K = "k must be between 1 and the server's max_k ({max_k}); got {k}"


@dataclass
class MatchSummary:
    """Counts per verdict, rows the report already had, photos uploaded, timings."""

    model: str = ""
    report: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (SAME, SIMILAR, NEW, ERROR), 0))
    already_done: int = 0
    uploaded: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.counts[ERROR]

    @property
    def photos(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        resumed = f", {self.already_done} already in the report" if self.already_done else ""
        rate = self.photos / self.seconds if self.seconds else 0.0
        return (
            f"{self.counts[SAME]} same, {self.counts[SIMILAR]} similar, {self.counts[NEW]} new, "
            f"{self.counts[ERROR]} error{resumed} in {self.seconds:.1f}s ({rate:.1f} photos/s; "
            f"model {self.model}; {self.uploaded} photo(s) uploaded) -> {self.report}"
        )


@dataclass
class _Photo:
    row: SupplierRow
    data: bytes = b""
    image: Image.Image | None = None
    error: str = ""


def match_photos(
    source: Path | str,
    *,
    server: str,
    token: str | None = None,
    output: Path | str | None = None,
    k: int = 5,
    batch_size: int = 64,
    workers: int = 4,
    threads: int | None = None,
    cache_dir: Path | None = None,
    verify: bool = False,
    progress: bool = True,
    on_batch: Callable[[MatchSummary], object] | None = None,
) -> MatchSummary:
    """Match every photo of ``source`` (a folder, or a .csv / .jsonl feed with supplier_ref
    and image_url) against ``server``'s index; write the report ``output``.

    The report is ``manage.py match_images``'s (an existing one is resumed). Raises
    ClientError (server unusable), ModelChanged (the server's model changed during the run;
    the rows written so far stay), MatchSourceError and ReportError (unusable input).
    """
    started = time.perf_counter()
    source = Path(source)
    output = Path(output or f"{source.stem or 'supplier'}-matches.csv")
    report_format(output)
    supplier_source = supplier_source_open(path=source)
    connection = Server(server, token=token)
    try:
        model = local_model(connection, cache_dir=cache_dir, threads=threads)
        if not 1 <= k <= model.described.max_k:
            raise ValueError(MSG_BAD_K.format(max_k=model.described.max_k, k=k))
        summary = MatchSummary(model=model.identity, report=str(output))
        with ReportWriter(path=output, k=k,
                          extra_columns=supplier_source.extra_columns) as report:
            summary.already_done = report.kept
            total = max(0, supplier_source.count() - report.kept) if progress else 0
            rows = pending_rows(supplier_source.rows(), report.done)
            run = _Run(model=model, server=connection, report=report, summary=summary, k=k,
                       verify=verify)
            _batches_run(rows, run, batch_size=batch_size, workers=workers,
                         progress=_Progress(total, enabled=progress), on_batch=on_batch,
                         started=started)
    finally:
        connection.close()
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass(frozen=True)
class _Run:
    """What every batch needs."""

    model: LocalModel
    server: Server
    report: ReportWriter
    summary: MatchSummary
    k: int
    verify: bool


def _batches_run(rows: Iterator[SupplierRow], run: _Run, *, batch_size: int, workers: int,
                 progress: _Progress, on_batch: Callable[[MatchSummary], object] | None,
                 started: float) -> None:
    """Decode each batch in threads, then embed, search and write it."""
    min_side = run.model.image_size
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="photo") as pool:
        for batch in _batches(rows, batch_size):
            photos = list(pool.map(lambda row: _prepare(row, min_side), batch))
            _batch_match(photos, run)
            progress.update(len(photos), errors=run.summary.failed)
            run.summary.seconds = time.perf_counter() - started
            if on_batch is not None:
                on_batch(run.summary)
    progress.close()


def _batches(rows: Iterator[SupplierRow], size: int) -> Iterator[list[SupplierRow]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1; got {size}")
    while batch := list(islice(rows, size)):
        yield batch


def _prepare(row: SupplierRow, min_side: int | None) -> _Photo:
    """Worker: read or fetch one photo and decode it as the server does; never raises."""
    if row.error:
        return _Photo(row, error=row.error)
    try:
        data = _read(row)
        image = to_rgb(image_decode_reduced(data, max_pixels=MAX_PIXELS, min_side=min_side))
    except ImageValidationError as error:
        return _Photo(row, error=str(error))
    except ClientError as error:
        return _Photo(row, error=str(error))
    except OSError as error:
        return _Photo(row, error=MSG_UNREADABLE.format(error=error))
    return _Photo(row, data=data, image=image)


def _read(row: SupplierRow) -> bytes:
    if row.path is not None:
        with row.path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    elif row.image_url.startswith(("http://", "https://")):
        try:
            with requests.get(row.image_url, timeout=FETCH_TIMEOUT, stream=True) as response:
                response.raise_for_status()
                data = response.raw.read(MAX_BYTES + 1, decode_content=True)
        except requests.RequestException as error:
            raise ClientError(MSG_FETCH.format(error=error)) from error
    else:  # a feed may name local files
        with Path(row.image_url).expanduser().open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ClientError(MSG_TOO_LARGE.format(max_bytes=MAX_BYTES))
    return data


def _batch_match(photos: list[_Photo], run: _Run) -> None:
    """Embed the batch's photos here, search them on the server, write every row in order."""
    model, server, summary, k = run.model, run.server, run.summary, run.k
    good = [photo for photo in photos if photo.image is not None]
    answers: dict[int, dict[str, Any]] = {}
    if good:
        step = time.perf_counter()
        vectors = model.embed([photo.image for photo in good if photo.image is not None])
        summary.embed_seconds += time.perf_counter() - step
        replies = server.similar_vectors(vectors.tolist(), model_identity=model.identity, k=k)
        if any(reply.get("status") == 400 for reply in replies):
            _check_model(server, model)
        answers = {id(photo): reply for photo, reply in zip(good, replies, strict=True)}
    for photo in photos:
        row = _report_row(photo, answers.get(id(photo)), model)
        if run.verify and row.verdict == SIMILAR:
            row = _verified_row(photo, server=server, model=model, k=k, summary=summary)
        run.report.write(row)
        summary.counts[row.verdict] += 1
        if row.verdict == ERROR:
            summary.errors.append((row.supplier_ref, row.error))


def _check_model(server: Server, model: LocalModel) -> None:
    found = server.model().model_identity
    if found != model.identity:
        raise ModelChanged(expected=model.identity, found=found)


def _report_row(photo: _Photo, answer: dict[str, Any] | None, model: LocalModel) -> MatchRow:
    row = photo.row
    if photo.error or answer is None:
        return MatchRow(supplier_ref=row.supplier_ref, verdict=ERROR, extra=row.extra,
                        error=photo.error or "not embedded")
    if answer.get("status") != 200:
        message = answer.get("error", {}).get("message", "the server refused the vector")
        return MatchRow(supplier_ref=row.supplier_ref, verdict=ERROR, extra=row.extra,
                        error=message)
    return _answered_row(row, answer.get("results", []), model)


def _answered_row(row: SupplierRow, results: list[dict[str, Any]],
                  model: LocalModel) -> MatchRow:
    matches = [(str(result["article_id"]), float(result["distance"])) for result in results]
    verdict = verdict_for(matches[0][1] if matches else None,
                          same_threshold=model.described.same_threshold,
                          similar_threshold=model.described.similar_threshold)
    return MatchRow(supplier_ref=row.supplier_ref, verdict=verdict, matches=matches,
                    extra=row.extra)


def _verified_row(photo: _Photo, *, server: Server, model: LocalModel, k: int,
                  summary: MatchSummary) -> MatchRow:
    """The row as the server answers for the uploaded photo (``verify``)."""
    name = photo.row.path.name if photo.row.path else "photo"
    answer = server.similar_upload(photo.data, name=name, k=k)
    summary.uploaded += 1
    return _answered_row(photo.row, answer.get("results", []), model)


class _Progress:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled and total > 0
        self.started = time.perf_counter()

    def update(self, count: int, *, errors: int) -> None:
        self.done += count
        if not self.enabled:
            return
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        width = 30
        filled = int(width * self.done / self.total)
        sys.stderr.write(f"\rMatching supplier photos [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.done}/{self.total} {rate:.1f} photos/s, errors={errors}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
