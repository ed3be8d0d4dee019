"""The index the web process serves: loaded once, memory-mapped, swapped for a newly published one.

Two ways to learn of a new build. With the default local "indexes" storage the process
serves builds in place and stat()s the ``CURRENT`` pointer per request. With a shared
storage (a volume every node mounts, S3...) it asks the database which build is current at
most every ``INDEX_CHECK_SECONDS``, fetches a new one into its own cache directory and swaps;
requests keep the previous index until the new one is complete, and a failed fetch is
retried at the next check.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from django.core.signals import request_started, setting_changed
from django.dispatch import receiver

from similarity.conf import similarity_settings
from similarity.engine.index import (
    BuildManifest,
    current_build,
    load_index,
    pin_faiss_threads,
    read_members,
)
from similarity.engine.index.storage import BUILDS_DIR, CURRENT_FILE, BuildInfo, read_build
from similarity.engine.threads import fork_safe_threads, mark_openmp_used
from similarity.errors import IndexNotReady
from similarity.models import CurrentIndex
from similarity.storages import (
    build_fetch,
    cached_builds_prune,
    index_storage,
    index_storage_is_local,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedIndex:
    """One finished build, loaded: the Faiss index, its manifest and its member ids."""

    name: str
    path: Path
    manifest: BuildManifest
    index: faiss.Index
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


def current_index_name() -> str | None:
    """The published build's name (one primary-key query), None before the first publish."""
    return (
        CurrentIndex.objects.filter(pk=CurrentIndex.SINGLETON_PK)
        .values_list("build_name", flat=True)
        .first()
    )


class IndexStore:
    """Per-process holder of the current index; thread-safe, swaps on a new build.

    Local storage: one stat() of the CURRENT pointer per request; it is replaced atomically
    (os.replace), so a new inode means a new build. Shared storage: one primary-key query
    at most every ``check_seconds``; between checks a request costs a clock read.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        shared: bool = False,
        cache_root: Path | None = None,
        check_seconds: float = 2.0,
    ) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._loaded: LoadedIndex | None = None
        self._stamp: tuple[int, int] | None = None
        self._threads_set = False
        self.shared = shared
        self.cache_root = cache_root
        self.check_seconds = check_seconds
        self._next_check = 0.0

    @property
    def root(self) -> Path:
        return self._root or similarity_settings().index_root

    def get(self) -> LoadedIndex:
        """The current index; raises IndexNotReady when no build exists yet."""
        if self.shared:
            return self._get_shared()
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
            self._loaded = self._load(current_build(self.root))
            self._stamp = stamp
            return self._loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded = None
            self._stamp = None
            self._next_check = 0.0

    def _get_shared(self) -> LoadedIndex:
        loaded = self._loaded
        if loaded is not None and time.monotonic() < self._next_check:
            return loaded
        # One thread checks (and fetches); the others keep serving the loaded index.
        if not self._lock.acquire(blocking=loaded is None):
            return loaded  # type: ignore[return-value]  # not None: blocking otherwise
        try:
            if self._loaded is not None and time.monotonic() < self._next_check:
                return self._loaded
            self._loaded = self._checked(self._loaded)
            return self._loaded
        finally:
            self._next_check = time.monotonic() + self.check_seconds
            self._lock.release()

    def _checked(self, loaded: LoadedIndex | None) -> LoadedIndex:
        """The published build: ``loaded`` when unchanged, else fetched, loaded and swapped.

        Any failure while a build is loaded keeps it (logged; retried at the next check).
        """
        try:
            name = current_index_name()
            if name is None:
                raise IndexNotReady()
            if loaded is not None and loaded.name == name:
                return loaded
            cache = self.cache_root or similarity_settings().index_cache_root
            path = build_fetch(storage=index_storage(), name=name, cache_dir=cache)
            fresh = self._load(read_build(path))
        except IndexNotReady:
            if loaded is None:
                raise
            return loaded
        except Exception as error:
            if loaded is None:
                raise IndexNotReady(f"the published index build is unavailable: {error}") from error
            logger.exception("Keeping build %s: the published one is unavailable", loaded.name)
            return loaded
        keep = {fresh.name} | ({loaded.name} if loaded is not None else set())
        cached_builds_prune(cache_dir=cache, keep=keep)
        return fresh

    def _load(self, info: BuildInfo | None) -> LoadedIndex:
        if not self._threads_set:
            # Commands searching the whole catalog use THREADS; request threads are pinned to 1.
            pin_faiss_threads(fork_safe_threads(similarity_settings().threads), unless_chosen=True)
            mark_openmp_used()
            self._threads_set = True
        if info is None:
            raise IndexNotReady("the current index build is missing; run manage.py build_index")
        return build_load(info)


def build_load(info: BuildInfo) -> LoadedIndex:
    """A build directory loaded for searching: its index memory-mapped, its members read."""
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


def local_build_load(*, name: str) -> LoadedIndex:
    """Build ``name`` of this machine's index root (where builds are written), loaded as is:
    never fetched through the "indexes" storage."""
    info = read_build(similarity_settings().index_root / BUILDS_DIR / name)
    if info is None:
        raise IndexNotReady(f"build {name} is not in this machine's index root")
    return build_load(info)


_store: IndexStore | None = None
_store_lock = threading.Lock()


def get_store() -> IndexStore:
    """The process-wide store for the configured data dir and storage.

    Made once per process (reading the settings and resolving the storage's location costs
    ~25 us, more than the check itself); a changed DATA_DIR, STORAGES or LOOKALIKE setting
    (tests, ``override_settings``) drops it through ``setting_changed``.
    """
    global _store
    store = _store
    if store is not None:
        return store
    with _store_lock:
        if _store is None:
            conf = similarity_settings()
            _store = IndexStore(
                conf.index_root,
                shared=not index_storage_is_local(),
                cache_root=conf.index_cache_root,
                check_seconds=conf.index_check_seconds,
            )
        return _store


@receiver(setting_changed)
def _store_reset(*, setting: str, **kwargs: object) -> None:
    global _store
    if setting in {"STORAGES", "LOOKALIKE", "DATA_DIR"}:
        with _store_lock:
            _store = None


_serving = False


@receiver(request_started)
def _request_thread_setup(**kwargs: object) -> None:
    """A request searches on one Faiss thread: its own thread, in a worker process.

    Threaded workers run a request per thread, each on a core of its own at best; a Faiss call
    that started a team of all cores per request would oversubscribe them (OpenMP's count is
    per thread, so each request thread sets it, once). Faiss's Python interrupt check takes
    the GIL inside every search, where the other request threads hold it: a serving process
    drops it (a search lasts milliseconds; SIGTERM is handled between requests).
    """
    global _serving
    if not _serving:
        faiss.InterruptCallback.clear_instance()
        _serving = True
    pin_faiss_threads(1)
