"""The one writer of an article's image file and image fields: validate, write atomically, record.

The downloader writes files from worker threads and rows in batches, so it uses the pieces
(``ImageFiles``, ``ImageTempFile``, ``image_fields``); everything else that stores an image
(the eval catalog import, tests) calls ``article_image_store``. Either way the same rules
hold: the file is never visible half-written, width and height are as displayed (after EXIF
orientation), and ``downloaded_url`` says where the bytes came from.

Files go through Django's "default" storage (``ImageFiles``): MEDIA_ROOT unless STORAGES
names a shared directory or an S3-compatible bucket (docs/scaling.md "Storage").
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.utils import timezone
from lookalike_core.images import ImageInfo, validate_image_bytes

from catalog.conf import catalog_settings
from catalog.models import Article, ArticleImage, article_image_path

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".download-"
TEMP_SUFFIX = ".tmp"
# Temp files younger than this may belong to a download running right now (another process).
TEMP_GRACE_SECONDS = 60.0
IMAGES_DIR = "images"
STAGING_DIR = "media-staging"  # under DATA_DIR: temp files bound for a remote storage


class ImageTempFile:
    """A ``.download-*.tmp`` file beside the final path: written, then committed or removed.

    The file is created by the first ``write`` (so it exists only while bytes arrive, and
    each write refreshes its mtime: a live one never looks abandoned to the sweep).
    ``commit`` fsyncs and renames it over the final name (``os.replace``); leaving the block
    without committing removes it. A process killed meanwhile leaves it behind, for
    ``image_temp_files_sweep`` to remove on the next run.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._handle: BinaryIO | None = None
        self._committed = False

    def __enter__(self) -> ImageTempFile:
        return self

    def write(self, data: bytes) -> None:
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.directory, prefix=TEMP_PREFIX,
                                        suffix=TEMP_SUFFIX)
            self.path, self._handle = Path(name), os.fdopen(fd, "wb")
        self._handle.write(data)

    def commit(self, path: Path) -> None:
        if self._handle is None or self.path is None:
            raise ValueError(f"nothing was written for {path}")
        self._handle.flush()
        os.fchmod(self._handle.fileno(), 0o644)
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.path, path)
        self._committed = True

    def upload(self, storage: Storage, name: str) -> None:
        """Send the written bytes to ``storage`` as ``name`` (one save: whole or absent)."""
        if self._handle is None or self.path is None:
            raise ValueError(f"nothing was written for {name}")
        self._handle.close()
        with open(self.path, "rb") as handle:
            saved = storage.save(name, File(handle, name=name))
        if saved != name:
            storage.delete(saved)
            raise OSError(f"the storage saved {name} as {saved}; configure it to overwrite "
                          "files (S3: file_overwrite=True)")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.close()
        if self.path is not None and not self._committed:
            self.path.unlink(missing_ok=True)


class ImageFiles:
    """Article image files in a Django storage (the "default" one unless given).

    A local ``FileSystemStorage`` (MEDIA_ROOT or a directory every node mounts) is written in
    place: a temp file beside the final name, then ``os.replace``. Any other storage (S3...)
    gets the temp file staged under ``DATA_DIR/media-staging`` and then one ``save``.
    """

    def __init__(self, storage: Storage | None = None) -> None:
        self.storage = storage if storage is not None else default_storage
        self.local_root: Path | None = (
            Path(self.storage.location) if isinstance(self.storage, FileSystemStorage) else None
        )
        self.temp_root = self.local_root or catalog_settings().data_dir / STAGING_DIR

    def temp_file(self, article_id: str, position: int = 0) -> ImageTempFile:
        """A temp file for the article's next image (``position`` > 0: an additional one),
        beside the final name when local."""
        return ImageTempFile(
            image_directory(media_root=self.temp_root, article_id=article_id, position=position)
        )

    def commit(self, temp: ImageTempFile, name: str) -> None:
        if self.local_root is not None:
            temp.commit(self.local_root / name)
        else:
            temp.upload(self.storage, name)

    def open(self, name: str) -> IO[bytes]:
        if self.local_root is not None:
            return open(self.local_root / name, "rb")
        return self.storage.open(name, "rb")

    def exists(self, name: str) -> bool:
        if self.local_root is not None:
            return (self.local_root / name).is_file()
        return self.storage.exists(name)

    def delete(self, name: str) -> None:
        """Remove ``name``; a missing file is not an error."""
        if self.local_root is not None:
            (self.local_root / name).unlink(missing_ok=True)
        else:
            self.storage.delete(name)

    def check_writable(self) -> None:
        """Raise ValueError when the (local) image directory cannot be written."""
        root = self.temp_root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"image directory {root} cannot be created: {exc}") from exc
        if not os.access(root, os.W_OK):
            raise ValueError(f"image directory {root} is not writable")

    def sweep(self, *, older_than: float = TEMP_GRACE_SECONDS) -> int:
        return image_temp_files_sweep(media_root=self.temp_root, older_than=older_than)


def image_directory(*, media_root: Path, article_id: str, position: int = 0) -> Path:
    """The directory of an article's image (the same whatever its extension)."""
    return (media_root / article_image_path(article_id, "x", position)).parent


def image_file_write(*, files: ImageFiles, article_id: str, data: bytes, ext: str) -> str:
    """Write ``data`` as the article's image file atomically; return its storage name."""
    name = article_image_path(article_id, ext)
    with files.temp_file(article_id) as temp:
        temp.write(data)
        files.commit(temp, name)
    return name


def image_fields(
    *, name: str, sha256: str, width: int, height: int, source_url: str, now: datetime,
) -> dict[str, object]:
    """The Article field values that record a stored image (and clear earlier errors)."""
    return {
        "image": name, "image_sha256": sha256, "image_width": width, "image_height": height,
        "downloaded_url": source_url, "download_status": Article.DownloadStatus.DOWNLOADED,
        "download_error": "", "refresh_error": "", "refresh_failed_at": None,
        "downloaded_at": now,
    }


def article_image_store(
    *, article: Article, data: bytes, source_url: str | None = None, info: ImageInfo | None = None
) -> Article:
    """Validate ``data``, store it as ``article``'s image and mark the article downloaded.

    ``source_url`` defaults to the article's ``image_url`` (the file then counts as fresh).
    ``info``: what ``validate_image_bytes`` already said of these bytes (not decoded again).
    Raises ``ImageValidationError`` for bytes that are not an acceptable image.
    """
    if info is None:
        info = validate_image_bytes(data, max_pixels=catalog_settings().download_max_pixels)
    files = ImageFiles()
    name = image_file_write(files=files, article_id=article.article_id, data=data, ext=info.ext)
    old = article.image.name if article.image else ""
    values = image_fields(
        name=name, sha256=hashlib.sha256(data).hexdigest(), width=info.width,
        height=info.height, source_url=source_url or article.image_url, now=timezone.now(),
    )
    for field, value in values.items():
        setattr(article, field, value)
    article.save(update_fields=[*values, "updated_at"])
    # An old file of another extension goes once the row points at the new one (if ours).
    ours = old is not None and old == article_image_path(article.article_id, old.rsplit(".", 1)[-1])
    if old and old != name and ours:
        files.delete(old)
    return article


def additional_image_store(
    *, article: Article, position: int, data: bytes, url: str, info: ImageInfo | None = None
) -> ArticleImage:
    """Validate ``data`` and store it as the article's additional image at ``position``
    (created or replaced), downloaded from ``url``; ``ImageValidationError`` if unusable."""
    if position < 1:
        raise ValueError(f"additional images have positions from 1; got {position}")
    if info is None:
        info = validate_image_bytes(data, max_pixels=catalog_settings().download_max_pixels)
    files = ImageFiles()
    name = article_image_path(article.article_id, info.ext, position)
    with files.temp_file(article.article_id, position) as temp:
        temp.write(data)
        files.commit(temp, name)
    image, _ = ArticleImage.objects.update_or_create(
        article=article, position=position,
        defaults={
            "url": url, "image": name, "image_sha256": hashlib.sha256(data).hexdigest(),
            "image_width": info.width, "image_height": info.height, "downloaded_url": url,
            "download_status": Article.DownloadStatus.DOWNLOADED, "download_error": "",
            "downloaded_at": timezone.now(),
        },
    )
    return image


def image_temp_files_sweep(*, media_root: Path, older_than: float = TEMP_GRACE_SECONDS) -> int:
    """Remove temp files left by interrupted downloads (older than ``older_than`` seconds).

    Younger ones are left alone: they may be another download run's files in flight.
    """
    root = media_root / IMAGES_DIR
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for path in root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another run swept it first
            continue
    if removed:
        logger.info("Removed %d temp files left by interrupted downloads under %s", removed, root)
    return removed
