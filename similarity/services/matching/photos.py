"""Match a batch of supplier photos against the current index and write a verdict per photo.

Reader (match_sources) -> fetch and decode in threads (the catalog's safe downloader) ->
embed locally with the index's model and runtime -> k-NN against the current index ->
writer (match_reports, one flushed line per photo, resumable).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from catalog.conf import catalog_settings
from catalog.images import ImageValidationError, image_decode_reduced
from catalog.progress import progress_bar
from catalog.selectors import article_ids_by_pk
from catalog.services.fetching import ImageFetchError, download_session, fetch_image
from similarity.conf import similarity_settings
from similarity.engine.files import atomic_write_bytes
from similarity.engine.imaging import to_rgb
from similarity.engine.index import knn_query
from similarity.selectors.search import query_embedder
from similarity.selectors.store import LoadedIndex, get_store
from similarity.selectors.validation import validate_k
from similarity.services.matching.reports import (
    DUPLICATE,
    ERROR,
    NEW,
    SIMILAR,
    MatchRow,
    ReportWriter,
    report_format,
)
from similarity.services.matching.sources import SupplierRow, supplier_source_open

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 240
ERRORS_KEPT = 200  # per-row errors kept on the summary (all of them are in the report)

MSG_BAD_THRESHOLD = "the similar threshold must be in (0, 2]; got {value}"
MSG_REPEATED = "supplier_ref repeated (first on line {line}); only the first row is matched"
MSG_TOO_LARGE = "image too large: > {max_bytes} bytes"
MSG_UNREADABLE = "could not read the file: {error}"
MSG_NO_VECTOR = "the model could not embed this image: {error}"


@dataclass
class MatchSummary:
    """Counts per verdict, rows skipped because the report had them, and where time went."""

    model: str = ""
    index_build: str = ""
    report: str = ""
    duplicate_threshold: float = 0.0
    similar_threshold: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (DUPLICATE, SIMILAR, NEW, ERROR), 0))
    already_done: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (supplier_ref, reason)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("load_seconds", "fetch_seconds", "embed_seconds", "search_seconds", "total_seconds"),
        0.0))

    @property
    def matched(self) -> int:
        return self.counts[DUPLICATE] + self.counts[SIMILAR] + self.counts[NEW]

    @property
    def failed(self) -> int:
        return self.counts[ERROR]

    @property
    def photos_per_second(self) -> float:
        total = self.timings["total_seconds"]
        return (self.matched + self.failed) / total if total else 0.0

    def describe(self) -> str:
        resumed = f", {self.already_done} already in the report" if self.already_done else ""
        return (
            f"{self.counts[DUPLICATE]} duplicate, {self.counts[SIMILAR]} similar, "
            f"{self.counts[NEW]} new, {self.counts[ERROR]} error{resumed} "
            f"in {self.timings['total_seconds']:.1f}s ({self.photos_per_second:.1f} photos/s; "
            f"model {self.model}, index {self.index_build}) -> {self.report}"
        )


@dataclass
class _Photo:
    """A row after fetching and decoding: the image to embed, or why there is none."""

    row: SupplierRow
    image: Image.Image | None = None
    error: str = ""


def supplier_photos_match(
    *,
    source: Path | str,
    output: Path | str,
    k: int = 5,
    similar_threshold: float | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    allow_private: bool | None = None,
    thumbnails_dir: Path | None = None,
    progress: bool = True,
    on_batch: Callable[[MatchSummary], object] | None = None,
) -> MatchSummary:
    """Match every photo of ``source`` against the current index; write the report ``output``.

    Verdicts: ``duplicate`` when the nearest article is at or under the model's duplicate
    threshold, ``similar`` at or under ``similar_threshold`` (default: the SIMILAR_THRESHOLD
    setting, else the model family's), ``new`` otherwise, ``error`` with the reason when
    the row could not be fetched, decoded or embedded (the batch goes on). Photos are
    fetched with the catalog's downloader (size, pixel and time limits, retries, private
    addresses refused unless ``allow_private`` / DOWNLOAD_ALLOW_PRIVATE), in batches of
    ``batch_size`` (MATCH_BATCH_SIZE), the next batch fetched while one is embedded: memory
    holds two batches at most. An existing report is resumed:
    its finished rows are kept and skipped, its error rows are tried again.
    ``thumbnails_dir`` also stores a small JPEG of each photo (``supplier_thumbnail_name``).
    Raises MatchSourceError (unusable source or report), IndexNotReady, ValueError.
    """
    started = time.perf_counter()
    conf, catalog_conf = similarity_settings(), catalog_settings()
    k = validate_k(k)
    batch_size = batch_size or conf.match_batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    output = Path(output)
    report_format(output)
    supplier_source = supplier_source_open(path=source)
    loaded = get_store().get()
    model = loaded.manifest.model
    similar = conf.similar_threshold_for(model) if similar_threshold is None else similar_threshold
    if not 0 < similar <= 2:
        raise ValueError(MSG_BAD_THRESHOLD.format(value=similar))
    step = time.perf_counter()
    embedder = query_embedder(loaded)  # the index's model and runtime, once per process
    load_seconds = time.perf_counter() - step
    summary = MatchSummary(
        model=model, index_build=loaded.name, report=str(output),
        duplicate_threshold=conf.duplicate_threshold_for(model), similar_threshold=similar,
    )
    summary.timings["load_seconds"] = load_seconds
    Image.MAX_IMAGE_PIXELS = catalog_conf.download_max_pixels
    workers = max(1, min(workers or catalog_conf.download_workers, batch_size))
    session = download_session(
        workers=workers, retries=catalog_conf.download_retries,
        allow_private=(catalog_conf.download_allow_private if allow_private is None
                       else allow_private),
    )
    prepare = partial(
        _photo_prepare, session=session, timeout=catalog_conf.download_timeout,
        max_bytes=catalog_conf.download_max_bytes, max_pixels=catalog_conf.download_max_pixels,
        min_side=embedder.image_size, thumbnails_dir=thumbnails_dir,
    )
    if thumbnails_dir is not None:
        thumbnails_dir.mkdir(parents=True, exist_ok=True)
    with (
        ReportWriter(path=output, k=k, extra_columns=supplier_source.extra_columns) as report,
        ThreadPoolExecutor(workers, thread_name_prefix="match-fetch") as pool,
    ):
        summary.already_done = report.kept
        total = max(0, supplier_source.count() - report.kept) if progress else 0
        bar = progress_bar(total=total, desc="Matching supplier photos", unit="photo",
                           enabled=progress)
        rows = _pending_rows(supplier_source.rows(), report.done)
        pending = _prefetch(rows, pool=pool, prepare=prepare, batch_size=batch_size)
        try:
            while pending:
                step = time.perf_counter()
                photos = [future.result() for future in pending]
                summary.timings["fetch_seconds"] += time.perf_counter() - step
                # The next batch downloads and decodes while this one is embedded and written.
                pending = _prefetch(rows, pool=pool, prepare=prepare, batch_size=batch_size)
                _batch_match(photos, loaded=loaded, embedder=embedder, k=k, report=report,
                             summary=summary)
                bar.update(len(photos))
                bar.set_postfix(errors=summary.failed, refresh=False)
                summary.timings["total_seconds"] = time.perf_counter() - started
                if on_batch is not None:
                    on_batch(summary)
        finally:
            for future in pending:
                future.cancel()
            bar.close()
            session.close()
    summary.timings["total_seconds"] = time.perf_counter() - started
    return summary


def _pending_rows(rows: Iterator[SupplierRow], done: set[str]) -> Iterator[SupplierRow]:
    """Rows not in the report yet; a ref seen earlier in this source becomes an error row."""
    first_line: dict[str, int] = {}
    for row in rows:
        if row.supplier_ref in first_line:
            yield SupplierRow(supplier_ref=f"{row.supplier_ref} (line {row.line})",
                              line=row.line, extra=row.extra,
                              error=MSG_REPEATED.format(line=first_line[row.supplier_ref]))
            continue
        first_line[row.supplier_ref] = row.line
        if row.supplier_ref not in done:
            yield row


def _prefetch(
    rows: Iterator[SupplierRow], *, pool: ThreadPoolExecutor,
    prepare: Callable[[SupplierRow], _Photo], batch_size: int,
) -> list[Future[_Photo]]:
    """Start fetching and decoding the next ``batch_size`` rows in the pool."""
    return [pool.submit(prepare, row) for row in itertools.islice(rows, batch_size)]


def _batch_match(
    photos: list[_Photo], *, loaded: LoadedIndex, embedder: Any, k: int, report: ReportWriter,
    summary: MatchSummary,
) -> None:
    """Embed the batch's decoded photos at once, search, write every row in source order."""
    good = [photo for photo in photos if photo.image is not None]
    answers: dict[int, list[tuple[str, float]]] = {}
    if good:
        step = time.perf_counter()
        try:
            vectors = embedder.embed_images([photo.image for photo in good])
        except Exception as exc:  # one bad batch must not stop the run: try each alone
            logger.warning("Batch embedding failed (%s); embedding one photo at a time", exc)
            vectors = _embed_one_by_one(embedder, good)
        summary.timings["embed_seconds"] += time.perf_counter() - step
        step = time.perf_counter()
        embedded = [(photo, vector) for photo, vector in zip(good, vectors, strict=True)
                    if vector is not None]
        if embedded:
            queries = np.stack([vector for _, vector in embedded]).astype(np.float32)
            neighbours = knn_query(loaded.index, queries, k)
            names = article_ids_by_pk(
                pks=np.concatenate([n.ids for n in neighbours]).tolist(), active_only=True
            )
            for (photo, _), answer in zip(embedded, neighbours, strict=True):
                answers[id(photo)] = [
                    (names[pk], max(0.0, float(distance)))
                    for pk, distance in zip(answer.ids.tolist(), answer.distances.tolist(),
                                            strict=True) if pk in names
                ]
        summary.timings["search_seconds"] += time.perf_counter() - step
    for photo in photos:
        row = _report_row(photo, answers.get(id(photo)), summary)
        report.write(row)
        summary.counts[row.verdict] += 1
        if row.verdict == ERROR and len(summary.errors) < ERRORS_KEPT:
            summary.errors.append((row.supplier_ref, row.error))


def _embed_one_by_one(embedder: Any, photos: list[_Photo]) -> list[np.ndarray | None]:
    vectors: list[np.ndarray | None] = []
    for photo in photos:
        try:
            vectors.append(embedder.embed_images([photo.image])[0])
        except Exception as exc:
            photo.error = MSG_NO_VECTOR.format(error=exc)
            vectors.append(None)
    return vectors


def _report_row(
    photo: _Photo, matches: list[tuple[str, float]] | None, summary: MatchSummary
) -> MatchRow:
    row = photo.row
    if photo.error or matches is None:
        return MatchRow(supplier_ref=row.supplier_ref, verdict=ERROR, extra=row.extra,
                        error=photo.error or "not embedded")
    best = matches[0][1] if matches else None
    if best is not None and best <= summary.duplicate_threshold:
        verdict = DUPLICATE
    elif best is not None and best <= summary.similar_threshold:
        verdict = SIMILAR
    else:
        verdict = NEW
    return MatchRow(supplier_ref=row.supplier_ref, verdict=verdict, matches=matches,
                    extra=row.extra)


def _photo_prepare(
    row: SupplierRow, *, session: requests.Session, timeout: float, max_bytes: int,
    max_pixels: int, min_side: int | None, thumbnails_dir: Path | None,
) -> _Photo:
    """Worker: fetch (or read) one photo and decode it for the model; never raises."""
    if row.error:
        return _Photo(row, error=row.error)
    try:
        if row.path is not None:
            data = _file_bytes(row.path, max_bytes=max_bytes)
        else:
            data = fetch_image(session, row.image_url, timeout=timeout, max_bytes=max_bytes,
                               max_pixels=max_pixels).data
        side = max(min_side or 0, THUMBNAIL_SIDE) if thumbnails_dir else min_side
        image = to_rgb(image_decode_reduced(data, max_pixels=max_pixels, min_side=side))
        if thumbnails_dir is not None:
            _thumbnail_save(image, thumbnails_dir / supplier_thumbnail_name(row.supplier_ref))
    except (ImageFetchError, ImageValidationError) as exc:
        return _Photo(row, error=str(exc))
    except OSError as exc:
        return _Photo(row, error=MSG_UNREADABLE.format(error=exc))
    except Exception as exc:  # a bug must not stop the batch; logged and reported
        logger.exception("Unexpected error preparing supplier photo %s", row.supplier_ref)
        return _Photo(row, error=f"unexpected error: {exc!r}")
    return _Photo(row, image=image)


def _file_bytes(path: Path, *, max_bytes: int) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageFetchError(MSG_TOO_LARGE.format(max_bytes=max_bytes))
    return data


def supplier_thumbnail_name(supplier_ref: str) -> str:
    """The file name of a supplier photo's thumbnail (refs may hold slashes or anything)."""
    return hashlib.sha256(supplier_ref.encode("utf-8")).hexdigest()[:32] + ".jpg"


def _thumbnail_save(image: Image.Image, path: Path) -> None:
    thumbnail = image.copy()
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    thumbnail.save(buffer, "JPEG", quality=85)
    atomic_write_bytes(path, buffer.getvalue())
