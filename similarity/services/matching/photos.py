"""Match a batch of supplier photos against the current index and write a verdict per photo.

Reader (``lookalike_core.sources``) -> fetch and decode in threads (``matching.prepare``, the
catalog's safe downloader) -> embed with the index's model and runtime (the process's one
provider) -> k-NN against the current index -> writer (``lookalike_core.match_report``, one flushed
line per photo, resumable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lookalike_core.match_report import (
    ERROR,
    NEW,
    SAME,
    SIMILAR,
    Evidence,
    MatchRow,
    ReportWriter,
    report_format,
)
from lookalike_core.sources import SupplierSource, pending_rows, supplier_source_open
from PIL import Image

from catalog.models import ArticleId
from catalog.progress import progress_bar
from catalog.selectors import article_ids_by_pk
from similarity.conf import similarity_settings
from similarity.engine.embedders import Embedder
from similarity.engine.index import knn_query
from similarity.engine.verification import (
    PairEvidence,
    VerifyPolicy,
    extract_features,
    gated_order,
    runner_up_inliers,
    verdict_for,
)
from similarity.selectors.search import query_embedder
from similarity.selectors.store import LoadedIndex, get_store
from similarity.selectors.validation import validate_k
from similarity.selectors.verification import (
    VERIFY_MIN_SIDE,
    CandidateImage,
    candidate_images,
    shortlist_verify,
)
from similarity.services.matching.prepare import (
    Photo,
    PhotoFetcher,
    Thumbnails,
    photo_fetcher,
    prefetch,
)

logger = logging.getLogger(__name__)

ERRORS_KEPT = 200  # per-row errors kept on the summary (all of them are in the report)
VERIFY_THREADS = 2  # photos verified at once (the machines this runs on have 2+ cores)

MSG_BAD_THRESHOLD = "the similar threshold must be in (0, 2]; got {value}"
MSG_BAD_BATCH = "batch_size must be >= 1; got {value}"
MSG_NO_VECTOR = "the model could not embed this image: {error}"

Matches = list[tuple[ArticleId, float]]  # (article_id, distance), nearest first
Found = list[tuple[int, ArticleId, float]]  # (pk, article_id, distance), nearest first


@dataclass
class MatchSummary:
    """Counts per verdict, rows skipped because the report had them, and where time went."""

    model: str = ""
    index_build: str = ""
    report: str = ""
    duplicate_threshold: float = 0.0
    similar_threshold: float = 0.0
    verified: bool = False  # candidates verified with local features
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (SAME, SIMILAR, NEW, ERROR), 0))
    already_done: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (supplier_ref, reason)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("load_seconds", "fetch_seconds", "embed_seconds", "search_seconds",
         "verify_seconds", "total_seconds"),
        0.0))

    @property
    def matched(self) -> int:
        return self.counts[SAME] + self.counts[SIMILAR] + self.counts[NEW]

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
            f"{self.counts[SAME]} same, {self.counts[SIMILAR]} similar, "
            f"{self.counts[NEW]} new, {self.counts[ERROR]} error{resumed}"
            f"{', verified' if self.verified else ''} "
            f"in {self.timings['total_seconds']:.1f}s ({self.photos_per_second:.1f} photos/s; "
            f"model {self.model}, index {self.index_build}) -> {self.report}"
        )


@dataclass(frozen=True)
class _Matcher:
    """What every batch needs: the index, its embedder, k."""

    loaded: LoadedIndex
    embedder: Embedder
    k: int
    policy: VerifyPolicy | None  # None: no verification

    @property
    def fetch(self) -> int:
        """Neighbours asked of the index: k, or the verification short list if longer."""
        return self.k if self.policy is None else max(self.k, self.policy.short_list)


def supplier_photos_match(
    *,
    source: Path | str,
    output: Path | str,
    k: int = 5,
    similar_threshold: float | None = None,
    verify: bool | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    allow_private: bool | None = None,
    thumbnails: Thumbnails | None = None,
    progress: bool = True,
    on_batch: Callable[[MatchSummary], object] | None = None,
) -> MatchSummary:
    """Match every photo of ``source`` against the current index; write the report ``output``.

    Verdicts: ``same`` when the nearest article is at or under the model's duplicate
    threshold (a near-identical photo), ``similar`` at or under ``similar_threshold``
    (default: the SIMILAR_THRESHOLD setting, else the model family's), ``new`` otherwise,
    ``error`` with the reason when the row could not be fetched, decoded or embedded (the
    batch goes on). Photos are fetched with the catalog's downloader (``matching.prepare``),
    in batches of ``batch_size`` (MATCH_BATCH_SIZE), the next batch fetched while one is
    embedded: memory holds two batches at most. An existing report is resumed: its finished
    rows are kept and skipped, its error rows are tried again. ``thumbnails`` receives a
    small JPEG of each photo. Raises MatchSourceError (unusable source), ReportError
    (unusable report), IndexNotReady, InvalidQuery (k), ValueError.
    """
    started = time.perf_counter()
    k = validate_k(k)
    batch_size = batch_size or similarity_settings().match_batch_size
    if batch_size < 1:
        raise ValueError(MSG_BAD_BATCH.format(value=batch_size))
    output = Path(output)
    report_format(output)
    supplier_source = supplier_source_open(path=source)
    loaded = get_store().get()
    summary = _summary(loaded, output, similar_threshold)
    summary.verified = similarity_settings().verify if verify is None else verify
    step = time.perf_counter()
    matcher = _Matcher(loaded, query_embedder(loaded), k,  # the index's model and runtime
                       VerifyPolicy() if summary.verified else None)
    summary.timings["load_seconds"] = time.perf_counter() - step
    min_side = matcher.embedder.image_size or 0
    fetcher = photo_fetcher(
        batch_size=batch_size, workers=workers, allow_private=allow_private,
        min_side=max(min_side, VERIFY_MIN_SIDE) if summary.verified else min_side,
        thumbnails=thumbnails,
    )
    try:
        with ReportWriter(path=output, k=k, extra_columns=supplier_source.extra_columns) as report:
            summary.already_done = report.kept
            _batches_run(supplier_source, report, fetcher, matcher, summary,
                         batch_size=batch_size, progress=progress, on_batch=on_batch,
                         started=started)
    finally:
        fetcher.close()
    summary.timings["total_seconds"] = time.perf_counter() - started
    return summary


def _summary(loaded: LoadedIndex, output: Path, similar_threshold: float | None) -> MatchSummary:
    """The run's summary with its thresholds: the duplicate one of the model, and the similar
    one asked for (else the setting's, else the model family's)."""
    conf = similarity_settings()
    model = loaded.manifest.model
    similar = conf.similar_threshold_for(model) if similar_threshold is None else similar_threshold
    if not 0 < similar <= 2:
        raise ValueError(MSG_BAD_THRESHOLD.format(value=similar))
    return MatchSummary(
        model=model, index_build=loaded.name, report=str(output),
        duplicate_threshold=conf.duplicate_threshold_for(model), similar_threshold=similar,
    )


def _batches_run(
    source: SupplierSource, report: ReportWriter, fetcher: PhotoFetcher, matcher: _Matcher,
    summary: MatchSummary, *, batch_size: int, progress: bool,
    on_batch: Callable[[MatchSummary], object] | None, started: float,
) -> None:
    """Fetch, match and write every pending row, a batch at a time; the next batch fetches
    while this one is embedded and written."""
    total = max(0, source.count() - report.kept) if progress else 0
    bar = progress_bar(total=total, desc="Matching supplier photos", unit="photo",
                       enabled=progress)
    rows = pending_rows(source.rows(), report.done)
    with ThreadPoolExecutor(fetcher.workers, thread_name_prefix="match-fetch") as pool:
        pending: list[Future[Photo]] = []
        try:
            pending = prefetch(rows, pool=pool, prepare=fetcher.prepare, batch_size=batch_size)
            while pending:
                step = time.perf_counter()
                photos = [future.result() for future in pending]
                summary.timings["fetch_seconds"] += time.perf_counter() - step
                pending = prefetch(rows, pool=pool, prepare=fetcher.prepare,
                                   batch_size=batch_size)
                _batch_match(photos, matcher=matcher, report=report, summary=summary)
                bar.update(len(photos))
                bar.set_postfix(errors=summary.failed, refresh=False)
                summary.timings["total_seconds"] = time.perf_counter() - started
                if on_batch is not None:
                    on_batch(summary)
        finally:
            for future in pending:
                future.cancel()
            bar.close()


def _batch_match(
    photos: list[Photo], *, matcher: _Matcher, report: ReportWriter, summary: MatchSummary
) -> None:
    """Embed the batch's decoded photos at once, search, write every row in source order."""
    good = [(photo, photo.image) for photo in photos if photo.image is not None]
    if good:
        step = time.perf_counter()
        vectors: Sequence[np.ndarray | None]
        try:
            vectors = list(matcher.embedder.embed_images([image for _, image in good]))
        except Exception as exc:  # one bad batch must not stop the run: try each alone
            logger.warning("Batch embedding failed (%s); embedding one photo at a time", exc)
            vectors = _embed_one_by_one(matcher.embedder, good)
        summary.timings["embed_seconds"] += time.perf_counter() - step
        step = time.perf_counter()
        embedded = [(photo, vector) for (photo, _), vector in zip(good, vectors, strict=True)
                    if vector is not None]
        found = _nearest(embedded, matcher)
        summary.timings["search_seconds"] += time.perf_counter() - step
        step = time.perf_counter()
        rows = _ranked_rows(photos, found, matcher, summary)
        summary.timings["verify_seconds"] += time.perf_counter() - step
    else:
        rows = [_report_row(photo, None, [], summary, matcher) for photo in photos]
    for row in rows:
        report.write(row)
        summary.counts[row.verdict] += 1
        if row.verdict == ERROR and len(summary.errors) < ERRORS_KEPT:
            summary.errors.append((row.supplier_ref, row.error))


def _nearest(embedded: list[tuple[Photo, np.ndarray]], matcher: _Matcher) -> dict[int, Found]:
    """Each embedded photo's nearest active articles (by ``id(photo)``), one Faiss call."""
    if not embedded:
        return {}
    queries = np.stack([vector for _, vector in embedded]).astype(np.float32)
    neighbors = knn_query(matcher.loaded.index, queries, matcher.fetch)
    names = article_ids_by_pk(
        pks=np.concatenate([n.ids for n in neighbors]).tolist(), active_only=True
    )
    return {
        id(photo): [
            (pk, names[pk], max(0.0, float(distance)))
            for pk, distance in zip(answer.ids.tolist(), answer.distances.tolist(), strict=True)
            if pk in names
        ]
        for (photo, _), answer in zip(embedded, neighbors, strict=True)
    }


def _ranked_rows(photos: list[Photo], found: dict[int, Found], matcher: _Matcher,
                 summary: MatchSummary) -> list[MatchRow]:
    """Every photo's report row, in source order; with verification, each photo's short list
    is verified in worker threads (OpenCV releases the GIL; the candidates' image names are
    read from the database once, here)."""
    policy = matcher.policy
    if policy is None:
        return [_report_row(photo, found.get(id(photo)), [], summary, matcher)
                for photo in photos]
    pks = sorted({pk for answer in found.values() for pk, _, _ in answer[:policy.short_list]})
    images = candidate_images(pks)
    jobs = [(photo, found.get(id(photo))) for photo in photos]
    with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="match-verify") as pool:
        evidence = list(pool.map(lambda job: _photo_evidence(job[0], job[1], images, policy),
                                 jobs))
    return [_report_row(photo, answer, proof, summary, matcher)
            for (photo, answer), proof in zip(jobs, evidence, strict=True)]


def _photo_evidence(photo: Photo, answer: Found | None, images: dict[int, CandidateImage],
                    policy: VerifyPolicy) -> list[PairEvidence | None]:
    if answer is None or photo.image is None:
        return []
    try:
        features = extract_features(photo.image)
        return shortlist_verify(features, [images.get(pk) for pk, _, _ in
                                           answer[:policy.short_list]])
    except Exception as exc:  # verification is extra evidence: never lose the row over it
        logger.warning("Verification failed for %s: %s", photo.row.supplier_ref, exc)
        return []


def _embed_one_by_one(
    embedder: Embedder, photos: list[tuple[Photo, Image.Image]]
) -> list[np.ndarray | None]:
    vectors: list[np.ndarray | None] = []
    for photo, image in photos:
        try:
            vectors.append(embedder.embed_images([image])[0])
        except Exception as exc:
            photo.error = MSG_NO_VECTOR.format(error=exc)
            vectors.append(None)
    return vectors


def _report_row(photo: Photo, found: Found | None, evidence: list[PairEvidence | None],
                summary: MatchSummary, matcher: _Matcher) -> MatchRow:
    row = photo.row
    if photo.error or found is None:
        return MatchRow(supplier_ref=row.supplier_ref, verdict=ERROR, extra=row.extra,
                        error=photo.error or "not embedded")
    policy = matcher.policy or VerifyPolicy()
    evidence = evidence + [None] * (len(found) - len(evidence))
    order = gated_order(evidence, policy=policy) if matcher.policy is not None else list(
        range(len(found)))
    order = order[:matcher.k]
    best = order[0] if order else None
    verdict = verdict_for(
        distance=None if best is None else found[best][2],
        evidence=None if best is None else evidence[best],
        runner_up=0 if best is None else runner_up_inliers(evidence, best),
        duplicate_threshold=summary.duplicate_threshold,
        similar_threshold=summary.similar_threshold,
        policy=policy,
    )
    return MatchRow(
        supplier_ref=row.supplier_ref, verdict=verdict,
        matches=[(found[rank][1], found[rank][2]) for rank in order],
        evidence=[_evidence(evidence[rank]) for rank in order],
        extra=row.extra,
    )


def _evidence(found: PairEvidence | None) -> Evidence | None:
    return None if found is None else Evidence(inliers=found.inliers,
                                               inlier_ratio=round(found.inlier_ratio, 4))
