"""The index phase of a build: full or incremental update of the Faiss index, then the switch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np

from catalog.models import Article
from similarity.conf import similarity_settings
from similarity.engine.index import (
    BuildInfo,
    BuildManifest,
    Timeit,
    add_vectors,
    build_index,
    current_build,
    find_build_by_checksum,
    input_checksum,
    load_index,
    members_table,
    prune_builds,
    read_manifest,
    read_members,
    recall_at_k,
    remove_ids,
    resolve_factory,
    supports_incremental,
    write_build,
)
from similarity.engine.index.aggregate import aggregate_by_article
from similarity.engine.index.members import MEMBERS_ARRAY, members_exist
from similarity.engine.threads import fork_safe_threads
from similarity.selectors.vectors import current_embeddings
from similarity.services.indexing.publish import index_local_sync, index_publish

logger = logging.getLogger(__name__)

RECALL_K = 10
EXACT_FACTORIES = ("IDMap2,Flat", "Flat")


@dataclass
class IndexInputs:
    ids: np.ndarray  # int64 article pks, ascending
    embedding_pks: np.ndarray  # int64, aligned with ids
    vectors: np.ndarray  # (n, d) float32, unit rows


@dataclass
class IndexOutcome:
    mode: str  # "full", "incremental", "unchanged" or "reused"
    build_name: str
    count: int
    added: int = 0
    removed: int = 0
    recall_at_10: float | None = None
    build_manifest: BuildManifest | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as JSON (what the IndexBuild row records); {} without a build."""
        return self.build_manifest.to_dict() if self.build_manifest is not None else {}


class _MadeIndex(NamedTuple):
    index: faiss.Index
    mode: str  # "full" or "incremental"
    added: int
    removed: int


def collect_inputs(identity: str) -> IndexInputs:
    """The vector of every indexable article, in article-pk order: its current images'
    embeddings (primary and additional) combined (``engine.index.aggregate``)."""
    rows = (
        current_embeddings(identity)
        .filter(
            article__is_active=True,
            article__download_status=Article.DownloadStatus.DOWNLOADED,
        )
        .order_by("article_id", "pk")
        .values_list("article_id", "pk", "vector")
    )
    # Filled in place: one (n, d) matrix in memory, not a list of blobs plus copies of it.
    count = rows.count()
    ids = np.empty(count, dtype=np.int64)
    embedding_pks = np.empty(count, dtype=np.int64)
    vectors: np.ndarray | None = None
    filled = 0
    for article_pk, embedding_pk, blob in rows.iterator(chunk_size=2000):
        if filled == count:
            break  # rows embedded since count(): the next build takes them
        vector = np.frombuffer(blob, dtype="<f4")
        if vectors is None:
            vectors = np.empty((count, vector.shape[0]), dtype=np.float32)
        ids[filled], embedding_pks[filled], vectors[filled] = article_pk, embedding_pk, vector
        filled += 1
    if vectors is None or not filled:
        return IndexInputs(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 0), np.float32)
        )
    return IndexInputs(*aggregate_by_article(ids[:filled], embedding_pks[:filled],
                                             vectors[:filled]))


def member_changes(
    old_ids: np.ndarray,
    old_embeddings: np.ndarray,
    new_ids: np.ndarray,
    new_embeddings: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids to remove, ids to add) between two builds' members; a changed embedding is both.

    Vectorised: a million members take a fraction of a second and no Python objects.
    """
    common, old_at, new_at = np.intersect1d(old_ids, new_ids, return_indices=True)
    changed = common[old_embeddings[old_at] != new_embeddings[new_at]]
    gone = np.union1d(np.setdiff1d(old_ids, new_ids), changed)
    fresh = np.union1d(np.setdiff1d(new_ids, old_ids), changed)
    return gone.astype(np.int64), fresh.astype(np.int64)


def _incremental(current_path: Path, inputs: IndexInputs) -> _MadeIndex | None:
    """Update the current index in place of a rebuild; None when its type cannot."""
    index = load_index(current_path, mmap=False)
    if not supports_incremental(index):
        return None
    old = read_members(current_path)
    gone, fresh = member_changes(old[:, 0], old[:, 1], inputs.ids, inputs.embedding_pks)
    removed = remove_ids(index, gone) if gone.size else 0
    mask = np.isin(inputs.ids, fresh)
    if mask.any():
        add_vectors(index, inputs.vectors[mask], inputs.ids[mask])
    return _MadeIndex(index, "incremental", int(mask.sum()), removed)


def index_update(
    *,
    inputs: IndexInputs,
    model: str,
    identity: str,
    index_type: str,
    full: bool = False,
    extra_manifest: dict[str, Any] | None = None,
) -> IndexOutcome:
    """Make the index of ``inputs`` current: reuse, update incrementally, or build anew."""
    conf = similarity_settings()
    count, dimension = inputs.vectors.shape
    factory = resolve_factory(index_type, count, dimension)
    checksum = input_checksum(inputs.ids, inputs.vectors, extra=f"{identity}\0{factory}")
    index_local_sync()  # the published build, when another machine built it
    current = current_build(conf.index_root)
    if not full:
        existing = _existing_build(conf.index_root, current, checksum, count)
        if existing is not None:
            return existing

    timings: dict[str, float] = {}
    made = _updated_or_new_index(
        None if full else current,
        inputs,
        identity=identity,
        index_type=index_type,
        factory=factory,
        threads=fork_safe_threads(conf.threads),
        timings=timings,
    )
    recall = _measured_recall(made.index, inputs, factory, conf.recall_sample, timings)
    manifest = BuildManifest.from_dict(
        {
            "model": model,
            "model_identity": identity,
            "index_type": index_type,
            "factory": factory,
            "input_checksum": checksum,
            "mode": made.mode,
            "recall_at_10": recall,
            **(extra_manifest or {}),
        }
    )
    written = _write_and_switch(made.index, manifest, inputs, timings)
    return IndexOutcome(
        mode=made.mode,
        build_name=written.name,
        count=count,
        added=made.added,
        removed=made.removed,
        recall_at_10=recall,
        build_manifest=written.manifest,
        timings=timings,
    )


def _existing_build(
    root: Path, current: BuildInfo | None, checksum: str, count: int
) -> IndexOutcome | None:
    """The outcome when a build of the same inputs exists (switched to), else None."""
    if current is not None and current.manifest.input_checksum == checksum:
        logger.info("Inputs unchanged since build %s; nothing to do", current.name)
        index_publish(name=current.name, build_id=current.manifest.build_id)
        return IndexOutcome("unchanged", current.name, count, build_manifest=current.manifest)
    previous = find_build_by_checksum(root, checksum)
    if previous is None:
        return None
    index_publish(name=previous.name, build_id=previous.manifest.build_id)
    return IndexOutcome("reused", previous.name, count, build_manifest=previous.manifest)


def _updated_or_new_index(
    current: BuildInfo | None,
    inputs: IndexInputs,
    *,
    identity: str,
    index_type: str,
    factory: str,
    threads: int,
    timings: dict[str, float],
) -> _MadeIndex:
    """``current`` updated in place when it is of the same model and factory, else a new one."""
    same_kind = (
        current is not None
        and current.manifest.model_identity == identity
        and current.manifest.factory == factory
        and members_exist(current.path)
    )
    if same_kind and current is not None:
        with Timeit("Updating the current index incrementally", into=timings, key="index_seconds"):
            updated = _incremental(current.path, inputs)
        if updated is not None:
            return updated
    count = len(inputs.ids)
    with Timeit(f"Building {factory} over {count} vectors", into=timings, key="index_seconds"):
        index = build_index(inputs.vectors, inputs.ids, index_type=index_type, threads=threads)
    return _MadeIndex(index, "full", count, 0)


def _measured_recall(
    index: faiss.Index,
    inputs: IndexInputs,
    factory: str,
    sample_size: int,
    timings: dict[str, float],
) -> float | None:
    """recall@10 of an approximate index on a fixed sample of its own vectors; None if exact."""
    if factory in EXACT_FACTORIES:
        return None
    count = len(inputs.ids)
    with Timeit("Measuring recall@10 against exact search", into=timings, key="recall_seconds"):
        sample = np.random.default_rng(0).choice(count, size=min(sample_size, count), replace=False)
        return recall_at_k(
            index, (inputs.vectors, inputs.ids), inputs.vectors[np.sort(sample)], RECALL_K
        )


def _write_and_switch(
    index: faiss.Index, manifest: BuildManifest, inputs: IndexInputs, timings: dict[str, float]
) -> BuildInfo:
    """Write the build with its members, publish it (storage, CURRENT, database), prune."""
    conf = similarity_settings()
    members = members_table(ids=inputs.ids, embedding_pks=inputs.embedding_pks)
    with Timeit("Writing the index build", into=timings, key="write_seconds"):
        path = write_build(conf.index_root, index, manifest, arrays={MEMBERS_ARRAY: members})
        written = BuildInfo(name=path.name, path=path, manifest=read_manifest(path))
        index_publish(name=path.name, build_id=written.manifest.build_id)
        prune_builds(conf.index_root, keep=conf.keep_builds)
    return written
