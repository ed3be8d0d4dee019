"""Top-k neighbors of every indexed article, written out: an export file, the stored table.

The batched Faiss search itself is a read (``selectors.neighbors``); here its answers go to
CSV / JSON Lines, or replace the SimilarArticle table (after each build with STORE_NEIGHBORS).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.db import transaction

from catalog.models import Article, ArticleId, ArticlePk
from catalog.selectors import existing_article_pks
from similarity.conf import similarity_settings
from similarity.engine.files import atomic_text_file
from similarity.engine.index import Neighbors
from similarity.models import IndexBuild, SimilarArticle
from similarity.selectors.neighbors import iter_catalog_neighbors
from similarity.selectors.store import LoadedIndex, get_store, local_build_load

logger = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
CSV_COLUMNS = ("article_id", "category", "rank", "neighbor_id", "distance")
INSERT_BATCH = 5000
EXPORT_BATCH = 1024  # answers hydrated (their shop ids and categories) per two queries
MSG_BAD_FORMAT = "output format must be csv or jsonl (from .csv/.jsonl/.ndjson); got {fmt!r}"


@dataclass
class NeighborsRun:
    build_name: str
    k: int
    articles: int = 0
    rows: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.articles / self.seconds if self.seconds else 0.0


def output_format(path: str | None, fmt: str | None) -> str:
    """csv or jsonl, from an explicit format or the file extension (csv by default)."""
    if fmt is None and path:
        suffix = Path(path).suffix.lower()
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, suffix)
    fmt = fmt or "csv"
    if fmt not in FORMATS:
        raise ValueError(MSG_BAD_FORMAT.format(fmt=fmt))
    return fmt


def neighbors_export(
    *,
    k: int,
    output: str | None = None,
    fmt: str | None = None,
    category_only: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    stream: IO[str] | None = None,
) -> NeighborsRun:
    """Write every indexed article's k nearest other articles (shop ids) as CSV or JSON Lines.

    To ``output`` (written to a temp file, renamed when complete) or to ``stream``/stdout.
    """
    fmt = output_format(output, fmt)
    loaded = get_store().get()
    run = NeighborsRun(build_name=loaded.name, k=k)
    started = time.perf_counter()
    answers = iter_catalog_neighbors(
        loaded, k, category_only=category_only, batch_size=batch_size, progress=progress
    )
    if output:
        with atomic_text_file(output) as out:
            _ExportWriter(out, fmt, run).write_all(answers)
    else:
        _ExportWriter(stream or sys.stdout, fmt, run).write_all(answers)
    run.seconds = time.perf_counter() - started
    return run


class _ExportWriter:
    """Writes answers as CSV rows or JSON Lines records, with the articles' shop ids."""

    def __init__(self, out: IO[str], fmt: str, run: NeighborsRun) -> None:
        self.out = out
        self.run = run
        self.csv = csv.writer(out) if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(CSV_COLUMNS)

    def write_all(self, answers: Iterable[tuple[ArticlePk, Neighbors]]) -> None:
        pending: list[tuple[ArticlePk, Neighbors]] = []
        for item in answers:
            pending.append(item)
            if len(pending) >= EXPORT_BATCH:
                self._write(pending)
                pending = []
        if pending:
            self._write(pending)

    def _write(self, answers: list[tuple[ArticlePk, Neighbors]]) -> None:
        queries = [query_pk for query_pk, _ in answers]
        pks = set(queries) | {int(pk) for _, answer in answers for pk in answer.ids}
        names: dict[ArticlePk, ArticleId] = dict(
            Article.objects.filter(pk__in=pks).values_list("pk", "article_id").iterator()
        )
        categories = dict(Article.objects.filter(pk__in=queries).values_list("pk", "category"))
        for query_pk, answer in answers:
            pairs = [
                (names.get(int(pk), str(pk)), round(float(distance), 6))
                for pk, distance in zip(answer.ids, answer.distances, strict=True)
            ]
            self.run.articles += 1
            self.run.rows += len(pairs)
            self._record(names[query_pk], categories[query_pk], pairs)

    def _record(
        self, article_id: ArticleId, category: str, pairs: list[tuple[ArticleId, float]]
    ) -> None:
        if self.csv is not None:
            for rank, (neighbor, distance) in enumerate(pairs, start=1):
                self.csv.writerow((article_id, category, rank, neighbor, distance))
            return
        record = {
            "article_id": article_id,
            "category": category,
            "neighbors": [{"article_id": n, "distance": d} for n, d in pairs],
        }
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")


def neighbors_store(
    *,
    k: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    loaded: LoadedIndex | None = None,
) -> NeighborsRun:
    """Replace the SimilarArticle table with the top-k lists of ``loaded`` (default: the
    build this process serves).

    The Faiss pass runs outside any transaction (on SQLite a transaction holds the write lock,
    and the pass takes minutes); only the delete + insert is one short transaction, so readers
    see the old lists until the commit, then the new ones, never a mix. Neighbors hard-deleted
    since the build are skipped, not inserted as dangling foreign keys.
    """
    k = k or similarity_settings().neighbors_k
    loaded = loaded or get_store().get()
    run = NeighborsRun(build_name=loaded.name, k=k)
    started = time.perf_counter()
    # Compact (query pk, Neighbors) answers, not model instances: ~N x k numbers in memory.
    answers = list(iter_catalog_neighbors(loaded, k, batch_size=batch_size, progress=progress))
    search_seconds = time.perf_counter() - started
    referenced = {q for q, _ in answers} | {
        pk for _, answer in answers for pk in answer.ids.tolist()
    }
    existing = existing_article_pks(pks=referenced)
    with transaction.atomic():
        SimilarArticle.objects.all().delete()
        rows: list[SimilarArticle] = []
        for query_pk, answer in answers:
            if query_pk in existing:
                run.articles += 1
                rows += _stored_rows(query_pk, answer, existing, build_name=loaded.name)
            if len(rows) >= INSERT_BATCH:
                _insert(rows, run)
        _insert(rows, run)
    run.seconds = time.perf_counter() - started
    run.timings = {
        "search_seconds": round(search_seconds, 3),
        "insert_seconds": round(run.seconds - search_seconds, 3),
    }
    return run


def _stored_rows(
    query_pk: ArticlePk, answer: Neighbors, existing: set[ArticlePk], *, build_name: str
) -> list[SimilarArticle]:
    """The query's neighbors that still exist, ranked from 1 (nearest)."""
    kept = [
        (pk, distance)
        for pk, distance in zip(answer.ids.tolist(), answer.distances.tolist(), strict=True)
        if pk in existing
    ]
    return [
        SimilarArticle(
            article_id=query_pk, neighbor_id=pk, rank=rank, distance=float(distance),
            build_name=build_name,
        )
        for rank, (pk, distance) in enumerate(kept, start=1)
    ]


def _insert(rows: list[SimilarArticle], run: NeighborsRun) -> None:
    SimilarArticle.objects.bulk_create(rows, batch_size=INSERT_BATCH)
    run.rows += len(rows)
    rows.clear()


def neighbors_refresh_after_build(
    *, build: IndexBuild, timings: dict[str, object], progress: bool
) -> None:
    """The post-build hook: refresh stored neighbors when STORE_NEIGHBORS is on, from the
    build as it was written on this machine (never fetched again through the storage).

    Skipped when the stored lists already come from this build with the configured k. The
    index is already live at this point, so a failure is logged and recorded on the build
    (``timings["neighbors_error"]``) instead of failing it.
    """
    conf = similarity_settings()
    if not conf.store_neighbors or not build.build_name:
        return
    first = SimilarArticle.objects.order_by("pk").values_list("build_name", flat=True).first()
    stored_k = SimilarArticle.objects.filter(rank__gt=conf.neighbors_k).exists()
    if first == build.build_name and not stored_k and build.mode in ("unchanged", "reused"):
        return
    try:
        loaded = local_build_load(name=build.build_name)
        run = neighbors_store(k=conf.neighbors_k, progress=progress, loaded=loaded)
    except Exception as exc:
        logger.exception("Refreshing stored neighbors failed")
        timings["neighbors_error"] = f"{type(exc).__name__}: {exc}"
        return
    timings["neighbors_seconds"] = round(run.seconds, 3)
    timings["neighbors_rows"] = run.rows
