"""The index the web process serves: loaded once, memory-mapped, reloaded when CURRENT moves."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from similarity.conf import similarity_settings
from similarity.engine.index import (
    BuildManifest,
    current_build,
    load_index,
    read_members,
    set_faiss_threads,
)
from similarity.engine.index.storage import CURRENT_FILE
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.errors import IndexNotReady
from similarity.models import Embedding

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedIndex:
    """One finished build, loaded: the Faiss index, its manifest and its member ids."""

    name: str
    path: Path
    manifest: BuildManifest
    index: Any  # faiss.Index
    ids: np.ndarray  # sorted article pks in the index
    embedding_pks: np.ndarray | None = None  # the Embedding behind each of ``ids``

    def contains(self, pk: int) -> bool:
        position = int(np.searchsorted(self.ids, pk))
        return position < len(self.ids) and int(self.ids[position]) == pk

    def members_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """The Embedding pks behind ``ids`` (which must all be members of this build)."""
        if self.embedding_pks is None:
            raise ValueError(f"build {self.name} was loaded without its members' embeddings")
        positions = np.searchsorted(self.ids, ids)
        positions = np.minimum(positions, len(self.ids) - 1)
        if not np.array_equal(self.ids[positions], ids):
            raise ValueError(f"ids not in build {self.name}: {np.setdiff1d(ids, self.ids)[:5]}")
        return self.embedding_pks[positions]


class IndexStore:
    """Per-process holder of the current index; thread-safe, reloads on a pointer change.

    Checking for a new build costs one stat() of the CURRENT pointer per request; it is
    replaced atomically (os.replace), so a new inode means a new build.
    """

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._loaded: LoadedIndex | None = None
        self._stamp: tuple[int, int] | None = None
        self._threads_set = False

    @property
    def root(self) -> Path:
        return self._root or similarity_settings().index_root

    def get(self) -> LoadedIndex:
        """The current index; raises IndexNotReady when no build exists yet."""
        try:
            stat = os.stat(self.root / CURRENT_FILE)
        except FileNotFoundError:
            raise IndexNotReady() from None
        stamp = (stat.st_ino, stat.st_mtime_ns)
        loaded = self._loaded
        if loaded is not None and stamp == self._stamp:
            return loaded
        with self._lock:
            if self._loaded is not None and stamp == self._stamp:
                return self._loaded
            self._loaded = self._load()
            self._stamp = stamp
            return self._loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded = None
            self._stamp = None

    def _load(self) -> LoadedIndex:
        if not self._threads_set:
            set_faiss_threads(fork_safe_threads(similarity_settings().threads))
            mark_openmp_used()
            self._threads_set = True
        info = current_build(self.root)
        if info is None:
            raise IndexNotReady("the current index build is missing; run manage.py build_index")
        index = load_index(info.path, mmap=True)
        members = read_members(info.path)
        logger.info("Loaded index build %s (%d vectors)", info.name, index.ntotal)
        return LoadedIndex(
            name=info.name,
            path=info.path,
            manifest=info.manifest,
            index=index,
            ids=np.ascontiguousarray(members[:, 0]),
            embedding_pks=np.ascontiguousarray(members[:, 1]),
        )


def index_vectors(loaded: LoadedIndex, ids: np.ndarray) -> np.ndarray:
    """The index's vectors of ``ids`` (all members of the build), in order.

    Read from Faiss where it keeps an id map (flat and HNSW builds), else from the
    embeddings the build recorded in members.npy.
    """
    import faiss

    if isinstance(loaded.index, faiss.IndexIDMap2):
        return np.asarray(loaded.index.reconstruct_batch(ids), dtype=np.float32)
    members = loaded.members_embeddings(ids)
    rows = dict(Embedding.objects.filter(pk__in=members.tolist()).values_list("pk", "vector"))
    blob = b"".join(bytes(rows[int(pk)]) for pk in members)
    return np.frombuffer(blob, dtype="<f4").reshape(len(ids), -1).astype(np.float32)


_store: IndexStore | None = None
_store_lock = threading.Lock()


def get_store() -> IndexStore:
    """The process-wide store for the configured data dir (recreated if the dir changes)."""
    global _store
    root = similarity_settings().index_root
    with _store_lock:
        if _store is None or _store.root != root:
            _store = IndexStore(root)
        return _store
