"""Django storages of similarity: the "indexes" storage (published builds: upload, fetch,
prune) and the "matching" storage (supplier match runs: uploads, reports, thumbnails).

A build is the files of one ``builds/<name>/`` directory (``index.faiss``, ``members.npy``,
``manifest.json``). Uploads write ``manifest.json`` last and fetches refuse a build without
it, so a build half-uploaded by a crashed worker is never served. The engine only ever sees
local directories (``read_build``-style pure functions); this module moves them.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.crypto import salted_hmac

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


# -- the "matching" storage: supplier match runs' uploads, reports and thumbnails ---------

MATCHING_STORAGE = "matching"
THUMBNAILS_DIR = "thumbnails"
THUMBNAIL_NAME = re.compile(r"[0-9a-f]{32}\.jpg")
_THUMBNAIL_SALT = "similarity.matching.thumbnail"
MSG_PRIVATE = "match run files are private: the admin serves them to staff (no public URL)"


class LocalMatchingStorage(FileSystemStorage):
    """The default "matching" storage: this machine's ``DATA_DIR/matching``, read from the
    settings on every use. Never served by URL: supplier files are private."""

    @property
    def base_location(self) -> str:
        return str(similarity_settings().data_dir / "matching")

    @property
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    def url(self, name: str | None) -> str:
        raise ValueError(MSG_PRIVATE)


def matching_storage() -> Storage:
    """The storage of match runs (``STORAGES["matching"]``, else the data dir): every node
    reads what another wrote, as for images and builds (docs/scaling.md)."""
    if MATCHING_STORAGE in settings.STORAGES:
        return storages[MATCHING_STORAGE]
    return LocalMatchingStorage()


def match_run_folder_new(pk: int) -> str:
    """A new run's folder: its pk and a random part, so no name in it can be guessed."""
    return f"{pk}-{secrets.token_urlsafe(18)}"


def match_thumbnail_name(*, folder: str, supplier_ref: str) -> str:
    """The file name of a supplier photo's thumbnail: a keyed hash of its ref (refs may hold
    slashes or anything, and are often guessable SKUs), keyed by the run's folder."""
    digest = salted_hmac(_THUMBNAIL_SALT, supplier_ref, secret=folder, algorithm="sha256")
    return digest.hexdigest()[:32] + ".jpg"


def match_thumbnail_key(*, folder: str, name: str) -> str:
    """The storage name of thumbnail ``name`` of the run in ``folder``; ValueError unless
    ``name`` is one ``match_thumbnail_name`` makes (nothing else may be read through it)."""
    if not THUMBNAIL_NAME.fullmatch(name):
        raise ValueError(f"not a thumbnail name: {name!r}")
    return f"{folder}/{THUMBNAILS_DIR}/{name}"


def storage_file_replace(*, storage: Storage, name: str, content: File) -> None:
    """Write ``content`` as ``name``, replacing a file of that name (storages otherwise pick
    another name); RuntimeError if the storage still renamed it."""
    if storage.exists(name):
        storage.delete(name)
    saved = storage.save(name, content)
    if saved != name:
        raise RuntimeError(f"storage saved {name!r} as {saved!r}; expected the same name")


def storage_folder_delete(*, storage: Storage, folder: str) -> None:
    """Delete every file under ``folder`` (and, on a filesystem, the emptied directories)."""
    try:
        directories, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    for directory in directories:
        storage_folder_delete(storage=storage, folder=f"{folder}/{directory}")
    for file_name in files:
        storage.delete(f"{folder}/{file_name}")
    if isinstance(storage, FileSystemStorage):
        shutil.rmtree(storage.path(folder), ignore_errors=True)
