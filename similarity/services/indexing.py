"""The index phase of a build: full or incremental update of the Faiss index, then the switch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import F

from catalog.models import Article
from similarity.conf import similarity_settings
from similarity.engine.index import (
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
    set_current,
    supports_incremental,
    write_build,
)
from similarity.engine.index.members import MEMBERS_ARRAY, members_exist
from similarity.engine.threads import fork_safe_threads
from similarity.models import Embedding

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


def collect_inputs(identity: str) -> IndexInputs:
    """The current embedding of every indexable article, in article-pk order."""
    rows = (
        Embedding.objects.filter(
            model=identity,
            article__is_active=True,
            article__download_status=Article.DownloadStatus.DOWNLOADED,
            image_sha256=F("article__image_sha256"),
        )
        .order_by("article_id")
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
    return IndexInputs(ids[:filled], embedding_pks[:filled], vectors[:filled])


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


def _incremental(current_path: Any, inputs: IndexInputs) -> tuple[Any, int, int] | None:
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
    return index, int(mask.sum()), removed


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
    root = conf.index_root
    count, dimension = inputs.vectors.shape
    factory = resolve_factory(index_type, count, dimension)
    checksum = input_checksum(inputs.ids, inputs.vectors, extra=f"{identity}\0{factory}")
    current = current_build(root)
    timings: dict[str, float] = {}

    if not full:
        if current is not None and current.manifest.input_checksum == checksum:
            logger.info("Inputs unchanged since build %s; nothing to do", current.name)
            return IndexOutcome("unchanged", current.name, count, build_manifest=current.manifest)
        previous = find_build_by_checksum(root, checksum)
        if previous is not None:
            set_current(root, previous.name)
            return IndexOutcome("reused", previous.name, count, build_manifest=previous.manifest)

    index = None
    mode, added, removed = "full", count, 0
    same_kind = (
        current is not None
        and current.manifest.model_identity == identity
        and current.manifest.factory == factory
        and members_exist(current.path)
    )
    if not full and same_kind:
        with Timeit("Updating the current index incrementally", into=timings, key="index_seconds"):
            updated = _incremental(current.path, inputs)
        if updated is not None:
            index, added, removed = updated
            mode = "incremental"
    if index is None:
        with Timeit(f"Building {factory} over {count} vectors", into=timings, key="index_seconds"):
            index = build_index(
                inputs.vectors,
                inputs.ids,
                index_type=index_type,
                threads=fork_safe_threads(conf.threads),
            )

    recall = None
    if factory not in EXACT_FACTORIES:
        with Timeit("Measuring recall@10 against exact search", into=timings, key="recall_seconds"):
            rng = np.random.default_rng(0)
            sample = rng.choice(count, size=min(conf.recall_sample, count), replace=False)
            recall = recall_at_k(
                index, (inputs.vectors, inputs.ids), inputs.vectors[np.sort(sample)], RECALL_K
            )

    manifest = BuildManifest.from_dict(
        {
            "model": model,
            "model_identity": identity,
            "index_type": index_type,
            "factory": factory,
            "input_checksum": checksum,
            "mode": mode,
            "recall_at_10": recall,
            **(extra_manifest or {}),
        }
    )
    members = members_table(ids=inputs.ids, embedding_pks=inputs.embedding_pks)
    with Timeit("Writing the index build", into=timings, key="write_seconds"):
        path = write_build(root, index, manifest, arrays={MEMBERS_ARRAY: members})
        written = read_manifest(path)
        set_current(root, path.name)
        prune_builds(root, keep=conf.keep_builds)
    return IndexOutcome(
        mode=mode,
        build_name=path.name,
        count=count,
        added=added,
        removed=removed,
        recall_at_10=recall,
        build_manifest=written,
        timings=timings,
    )
