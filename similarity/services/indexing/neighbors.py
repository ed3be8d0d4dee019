"""Top-k neighbours of every indexed article: batched Faiss search, export, stored table."""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from django.db import transaction
from django.db.models import F

from catalog.models import Article
from catalog.progress import progress_bar
from catalog.selectors import existing_article_pks
from similarity.conf import similarity_settings
from similarity.engine.files import atomic_text_file
from similarity.engine.index import Neighbors, knn_query
from similarity.models import Embedding, SimilarArticle
from similarity.selectors.search import SimilarResult
from similarity.selectors.store import LoadedIndex, get_store

logger = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
CSV_COLUMNS = ("article_id", "category", "rank", "neighbor_id", "distance")
INSERT_BATCH = 5000
MSG_BAD_K = "k must be between 1 and {max_k}; got {k}"
MSG_BAD_FORMAT = "output format must be csv or jsonl (from .csv/.jsonl/.ndjson); got {fmt!r}"


def vector_batches(
    identity: str, ids: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of the stored embeddings of ``ids``, ``batch_size`` at a time.

    One query per batch, so memory holds one batch of vectors, never the whole catalog.
    Ids without a current embedding (changed since the build) are left out.
    """
    for start in range(0, len(ids), batch_size):
        wanted = [int(pk) for pk in ids[start : start + batch_size]]
        rows = dict(
            Embedding.objects.filter(
                model=identity, article_id__in=wanted, image_sha256=F("article__image_sha256")
            ).values_list("article_id", "vector")
        )
        found = [pk for pk in wanted if pk in rows]
        if not found:
            continue
        vectors = np.frombuffer(b"".join(bytes(rows[pk]) for pk in found), dtype="<f4")
        yield np.asarray(found, dtype=np.int64), vectors.reshape(len(found), -1).astype(np.float32)


def neighbors_search(
    index: Any,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    k: int,
    *,
    allowed_ids: np.ndarray | None = None,
) -> Iterator[tuple[int, Neighbors]]:
    """(query id, its k nearest other ids) for each query of each batch; one Faiss call a batch.

    The query's own id is dropped (it is in the index, at distance 0). When more than k stored
    vectors tie with it at distance 0 it may not come back at all; then the first k are kept.
    """
    for ids, vectors in batches:
        answers = knn_query(index, vectors, k + 1, allowed_ids=allowed_ids)
        for query_id, answer in zip(ids.tolist(), answers, strict=True):
            keep = answer.ids != query_id
            yield query_id, Neighbors(answer.ids[keep][:k], answer.distances[keep][:k])


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


def _categories(ids: np.ndarray) -> dict[str, np.ndarray]:
    by_category: dict[str, list[int]] = {}
    wanted = set(ids.tolist())
    rows = Article.objects.order_by("pk").values_list("pk", "category").iterator(chunk_size=5000)
    for pk, category in rows:
        if pk in wanted:
            by_category.setdefault(category, []).append(pk)
    return {c: np.asarray(p, dtype=np.int64) for c, p in sorted(by_category.items())}


def iter_catalog_neighbors(
    loaded: LoadedIndex,
    k: int,
    *,
    category_only: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> Iterator[tuple[int, Neighbors]]:
    """Neighbours of every article of ``loaded``, batched; per category when ``category_only``."""
    max_k = similarity_settings().max_k
    if not 1 <= k <= max_k:
        raise ValueError(MSG_BAD_K.format(max_k=max_k, k=k))
    batch_size = batch_size or similarity_settings().neighbors_batch
    identity = loaded.manifest.model_identity
    groups = _categories(loaded.ids) if category_only else {"": loaded.ids}
    bar = progress_bar(
        total=len(loaded.ids), unit="article", desc="Neighbours", enabled=progress
    )
    with bar:
        for members in groups.values():
            allowed = members if category_only else None
            for query_id, answer in neighbors_search(
                loaded.index, vector_batches(identity, members, batch_size), k,
                allowed_ids=allowed,
            ):
                bar.update(1)
                yield query_id, answer


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
    if output:
        with atomic_text_file(output) as out:
            _write(out, fmt, loaded, run, k, category_only, batch_size, progress)
    else:
        _write(stream or sys.stdout, fmt, loaded, run, k, category_only, batch_size, progress)
    run.seconds = time.perf_counter() - started
    return run


def _write(
    out: IO[str], fmt: str, loaded: LoadedIndex, run: NeighborsRun, k: int,
    category_only: bool, batch_size: int | None, progress: bool,
) -> None:
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(CSV_COLUMNS)
    pending: list[tuple[int, Neighbors]] = []

    def flush() -> None:
        pks = {q for q, _ in pending} | {int(i) for _, a in pending for i in a.ids}
        meta = dict(
            Article.objects.filter(pk__in=pks).values_list("pk", "article_id").iterator()
        ) if pks else {}
        cats = dict(Article.objects.filter(pk__in=[q for q, _ in pending]).values_list(
            "pk", "category"))
        for query_id, answer in pending:
            pairs = [
                (meta.get(int(i), str(i)), round(float(d), 6))
                for i, d in zip(answer.ids, answer.distances, strict=True)
            ]
            run.articles += 1
            run.rows += len(pairs)
            if writer:
                for rank, (neighbor, distance) in enumerate(pairs, start=1):
                    writer.writerow((meta[query_id], cats[query_id], rank, neighbor, distance))
            else:
                record = {
                    "article_id": meta[query_id],
                    "category": cats[query_id],
                    "neighbors": [{"article_id": n, "distance": d} for n, d in pairs],
                }
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        pending.clear()

    for item in iter_catalog_neighbors(
        loaded, k, category_only=category_only, batch_size=batch_size, progress=progress
    ):
        pending.append(item)
        if len(pending) >= 1024:
            flush()
    if pending:
        flush()


def neighbors_store(
    *, k: int | None = None, batch_size: int | None = None, progress: bool = False
) -> NeighborsRun:
    """Replace the SimilarArticle table with the current build's top-k lists.

    The Faiss pass runs outside any transaction (on SQLite a transaction holds the write lock,
    and the pass takes minutes); only the delete + insert is one short transaction, so readers
    see the old lists until the commit, then the new ones, never a mix. Neighbours hard-deleted
    since the build are skipped, not inserted as dangling foreign keys.
    """
    k = k or similarity_settings().neighbors_k
    loaded = get_store().get()
    run = NeighborsRun(build_name=loaded.name, k=k)
    started = time.perf_counter()
    # Compact (query id, Neighbors) answers, not model instances: ~N x k numbers in memory.
    answers = list(iter_catalog_neighbors(loaded, k, batch_size=batch_size, progress=progress))
    search_seconds = time.perf_counter() - started
    referenced = {q for q, _ in answers} | {
        pk for _, answer in answers for pk in answer.ids.tolist()
    }
    existing = existing_article_pks(pks=referenced)
    rows: list[SimilarArticle] = []
    with transaction.atomic():
        SimilarArticle.objects.all().delete()
        for query_id, answer in answers:
            if query_id not in existing:
                continue
            run.articles += 1
            kept = [
                (pk, distance)
                for pk, distance in zip(answer.ids.tolist(), answer.distances.tolist(), strict=True)
                if pk in existing
            ]
            for rank, (pk, distance) in enumerate(kept, start=1):
                rows.append(SimilarArticle(
                    article_id=query_id, neighbor_id=pk, rank=rank,
                    distance=float(distance), build_name=loaded.name,
                ))
            if len(rows) >= INSERT_BATCH:
                _insert(rows, run)
        _insert(rows, run)
    run.seconds = time.perf_counter() - started
    run.timings = {
        "search_seconds": round(search_seconds, 3),
        "insert_seconds": round(run.seconds - search_seconds, 3),
    }
    return run


def _insert(rows: list[SimilarArticle], run: NeighborsRun) -> None:
    SimilarArticle.objects.bulk_create(rows, batch_size=INSERT_BATCH)
    run.rows += len(rows)
    rows.clear()


def neighbors_refresh_after_build(*, build: Any, timings: dict[str, Any], progress: bool) -> None:
    """The post-build hook: refresh stored neighbours when STORE_NEIGHBORS is on.

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
        run = neighbors_store(k=conf.neighbors_k, progress=progress)
    except Exception as exc:
        logger.exception("Refreshing stored neighbours failed")
        timings["neighbors_error"] = f"{type(exc).__name__}: {exc}"
        return
    timings["neighbors_seconds"] = round(run.seconds, 3)
    timings["neighbors_rows"] = run.rows


def stored_neighbors(article: Article | str, k: int | None = None) -> list[SimilarResult]:
    """Selector: an article's stored neighbours (itself excluded), nearest first, no Faiss.

    Same dataclass as similarity.selectors; [] when nothing is stored for it (STORE_NEIGHBORS
    off, article added after the last build). At most NEIGHBORS_K results exist.
    """
    k = k or similarity_settings().neighbors_k
    if isinstance(article, str):
        filters: dict[str, Any] = {"article__article_id": article}
    else:
        filters = {"article_id": article.pk}
    rows = (
        SimilarArticle.objects.filter(**filters, neighbor__is_active=True)
        .select_related("neighbor")
        .order_by("rank")[:k]
    )
    return [
        SimilarResult(
            article_id=row.neighbor.article_id,
            title=row.neighbor.title,
            category=row.neighbor.category,
            image_url=row.neighbor.image_url,
            image=row.neighbor.image.name or "",
            pk=row.neighbor_id,
            distance=row.distance,
            score=1.0 - row.distance,
        )
        for row in rows
    ]
