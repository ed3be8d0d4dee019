"""Index builds in Django's storage API: the "indexes" storage, upload, fetch and prune.

A build is the files of one ``builds/<name>/`` directory (``index.faiss``, ``members.npy``,
``manifest.json``). Uploads write ``manifest.json`` last and fetches refuse a build without
it, so a build half-uploaded by a crashed worker is never served. The engine only ever sees
local directories (``read_build``-style pure functions); this module moves them.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from similarity.conf import similarity_settings
from similarity.engine.files import fsync_dir, fsync_file
from similarity.engine.index.manifest import MANIFEST_FILE
from similarity.engine.index.storage import BUILDS_DIR, TMP_PREFIX, clean_stale_tmp

logger = logging.getLogger(__name__)

INDEX_STORAGE = "indexes"
COPY_CHUNK_BYTES = 4 * 1024 * 1024


class LocalIndexStorage(FileSystemStorage):
    """The default "indexes" storage: this machine's ``DATA_DIR/index`` (where builds are
    written), read from the settings on every use so a changed data dir is followed."""

    @property
    def base_location(self) -> str:
        return str(similarity_settings().index_root)

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)


def index_storage() -> Storage:
    """The storage that holds published builds (``STORAGES["indexes"]``, else the data dir)."""
    if INDEX_STORAGE in settings.STORAGES:
        return storages[INDEX_STORAGE]
    return LocalIndexStorage()


def index_storage_is_local(storage: Storage | None = None) -> bool:
    """True when the storage is this machine's index root: builds are served in place."""
    storage = storage or index_storage()
    if not isinstance(storage, FileSystemStorage):
        return False
    return Path(storage.location).resolve() == similarity_settings().index_root.resolve()


def build_files_key(name: str, file_name: str = "") -> str:
    """The storage name of a build's directory, or of one of its files."""
    return f"{BUILDS_DIR}/{name}/{file_name}" if file_name else f"{BUILDS_DIR}/{name}"


def build_is_stored(*, storage: Storage, name: str) -> bool:
    """True when ``name`` was uploaded completely (its manifest, written last, is there)."""
    return storage.exists(build_files_key(name, MANIFEST_FILE))


def build_upload(*, storage: Storage, build_path: Path) -> bool:
    """Copy a finished local build directory to ``storage``; False when it was already there.

    Files of an earlier interrupted upload are replaced; the manifest goes last.
    """
    name = build_path.name
    if build_is_stored(storage=storage, name=name):
        return False
    files = sorted(p for p in build_path.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    for path in [*files, build_path / MANIFEST_FILE]:
        key = build_files_key(name, path.name)
        if storage.exists(key):  # left by an interrupted upload
            storage.delete(key)
        with open(path, "rb") as handle:
            saved = storage.save(key, File(handle, name=path.name))
        if saved != key:
            raise RuntimeError(f"storage saved {key!r} as {saved!r}; expected the same name")
    logger.info("Uploaded index build %s to the %r storage", name, INDEX_STORAGE)
    return True


def build_fetch(*, storage: Storage, name: str, cache_dir: Path) -> Path:
    """Download build ``name`` into ``cache_dir/<name>`` (temp dir, then rename); its path.

    An existing ``cache_dir/<name>`` is complete (it only ever appears by rename) and is
    returned as is. Raises ``FileNotFoundError`` when the storage has no complete build.
    """
    final = cache_dir / name
    if final.is_dir():
        return final
    if not build_is_stored(storage=storage, name=name):
        raise FileNotFoundError(f"no complete build {name!r} in the {INDEX_STORAGE!r} storage")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _, file_names = storage.listdir(build_files_key(name))
        for file_name in sorted(file_names):
            with storage.open(build_files_key(name, file_name), "rb") as source, open(
                tmp / file_name, "wb"
            ) as target:
                shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)
            fsync_file(tmp / file_name)
        fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not "another process of this node got there first"
                raise
        fsync_dir(cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Fetched index build %s into %s", name, cache_dir)
    return final


def stored_build_names(*, storage: Storage) -> list[str]:
    """Names of the complete builds in ``storage``, oldest first (names sort by time)."""
    try:
        directories, _ = storage.listdir(BUILDS_DIR)
    except FileNotFoundError:
        return []
    names = (d for d in directories if not d.startswith(TMP_PREFIX))
    return sorted(n for n in names if build_is_stored(storage=storage, name=n))


def stored_builds_prune(*, storage: Storage, keep: int, current: str) -> list[str]:
    """Delete all but the newest ``keep`` complete builds from ``storage``, never ``current``.

    The manifest goes first, so a build being deleted is never fetched half-gone.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1; got {keep}")
    names = stored_build_names(storage=storage)
    doomed = [n for n in names[: max(0, len(names) - keep)] if n != current]
    for name in doomed:
        _, file_names = storage.listdir(build_files_key(name))
        ordered = sorted(file_names, key=lambda f: f != MANIFEST_FILE)
        for file_name in ordered:
            storage.delete(build_files_key(name, file_name))
        if isinstance(storage, FileSystemStorage):
            storage.delete(build_files_key(name))  # the emptied directory
        logger.info("Pruned index build %s from the %r storage", name, INDEX_STORAGE)
    return doomed


def cached_builds_prune(*, cache_dir: Path, keep: set[str]) -> list[str]:
    """Remove cached builds not in ``keep`` (memory maps of removed ones stay valid), and
    temp dirs of fetches that died (older than an hour: younger ones may be in flight)."""
    if not cache_dir.is_dir():
        return []
    clean_stale_tmp(cache_dir)
    removed = []
    for path in cache_dir.iterdir():
        if path.name in keep or path.name.startswith(TMP_PREFIX) or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed
