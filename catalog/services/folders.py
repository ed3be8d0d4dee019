"""Folder import: a directory of photos becomes a catalog, images copied in without a network.

Article ids are the file's path relative to the folder without its extension, always with
its sub-folders (``fruit/apple-01`` for ``fruit/apple-01.jpg``, ``mug`` for ``mug.png``), so
ids stay stable when files are added elsewhere; the category is the sub-folder path
(``fruit``; empty at the top level) and the title the file name with ``-``/``_`` as spaces.
With a labels CSV (columns ``article_id``, ``image_file`` relative to the folder, optional
``title``, ``category`` and any others, kept as metadata) the labels decide ids and
categories, and only the listed files are imported: the others are counted as left out
(intended, so they do not make the run partial), while listed files that fail are skipped.

Images are validated as downloads are (format, pixel and byte limits), written atomically
under the catalog's image path and recorded as downloaded; ``image_url`` is the file's
``file://`` URI, which the downloader never fetches while the stored copy is intact.
Re-running on the same folder changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction
from lookalike_core.images import ImageValidationError, validate_image_bytes
from lookalike_core.localfiles import folder_photos, local_file_problem, local_file_read

from catalog.conf import catalog_settings
from catalog.models import Article, article_image_path
from catalog.services.images import ImageFiles, article_image_store
from catalog.services.imports import article_id_refusal, article_text_problem

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif"}

MSG_NOT_A_DIRECTORY = "not a directory: {path}"
MSG_LABELS_MISSING = "labels file not found: {path}"
MSG_LABELS_COLUMNS = "labels file {path} needs the columns article_id,image_file; got {columns}"
MSG_DUPLICATE_ID = "duplicate article_id {article_id!r} (also {other})"
MSG_FILE_MISSING = "image file {file!r} does not exist"
MSG_OUTSIDE = "image file {file!r} is outside the folder"


class FolderImportError(Exception):
    """The folder or labels file as a whole cannot be used."""


@dataclass
class SkippedFile:
    file: str
    reason: str


@dataclass
class FolderImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    not_listed: int = 0  # files left out because the labels file does not list them
    dry_run: bool = False

    def describe(self) -> str:
        text = (
            f"{self.created} new, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped"
        )
        if self.not_listed:
            text += f"; {self.not_listed} files not in the labels file, left out"
        return text + (" [dry run: nothing written]" if self.dry_run else "")


@dataclass(frozen=True)
class _Entry:
    file: Path
    relative: str
    article_id: str
    title: str
    category: str
    metadata: dict[str, Any]


def catalog_import_folder(
    *, directory: Path | str, labels: Path | str | None = None, dry_run: bool = False
) -> FolderImportSummary:
    """Upsert one article per photo under ``directory`` (see the module docstring)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FolderImportError(MSG_NOT_A_DIRECTORY.format(path=root))
    root = root.resolve()
    summary = FolderImportSummary(dry_run=dry_run)
    entries = (_entries_from_labels(root, Path(labels), summary) if labels
               else _entries(root, summary))
    seen: dict[str, str] = {}
    conf = catalog_settings()
    for entry in entries:
        if entry.article_id in seen:
            summary.skipped.append(SkippedFile(entry.relative, MSG_DUPLICATE_ID.format(
                article_id=entry.article_id, other=seen[entry.article_id])))
            continue
        seen[entry.article_id] = entry.relative
        # The catalog import's rules: ids the API can route, values the database can store.
        problem = article_id_refusal(entry.article_id) or article_text_problem(
            {"title": entry.title, "category": entry.category, **entry.metadata})
        if problem:
            summary.skipped.append(SkippedFile(entry.relative, problem))
            continue
        try:
            outcome = _upsert(entry, conf=conf, dry_run=dry_run)
        except (ImageValidationError, OSError) as error:
            summary.skipped.append(SkippedFile(entry.relative, str(error)))
            continue
        setattr(summary, outcome, getattr(summary, outcome) + 1)
    return summary


def _entries(root: Path, summary: FolderImportSummary) -> list[_Entry]:
    listing = folder_photos(root, extensions=IMAGE_EXTENSIONS)
    summary.skipped.extend(SkippedFile(file, reason) for file, reason in listing.skipped)
    entries = []
    for path in listing.files:
        relative = path.relative_to(root)
        stem = relative.with_suffix("").as_posix()
        category = relative.parent.as_posix() if relative.parent != Path(".") else ""
        entries.append(_Entry(path, relative.as_posix(), stem, _title(path.stem), category,
                              {"source_file": relative.as_posix()}))
    return entries


def _entries_from_labels(root: Path, labels: Path, summary: FolderImportSummary) -> list[_Entry]:
    if not labels.is_file():
        raise FolderImportError(MSG_LABELS_MISSING.format(path=labels))
    with labels.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "article_id" not in columns or "image_file" not in columns:
            raise FolderImportError(
                MSG_LABELS_COLUMNS.format(path=labels, columns=",".join(columns)))
        reader.fieldnames = columns
        rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    entries, listed = [], set()
    for row in rows:
        name = row.pop("image_file")
        path = Path(os.path.realpath(root / name))  # never raises, even on a link loop
        if not path.is_relative_to(root):
            summary.skipped.append(SkippedFile(name, MSG_OUTSIDE.format(file=name)))
            continue
        listed.add(path)
        if not os.path.lexists(root / name):
            summary.skipped.append(SkippedFile(name, MSG_FILE_MISSING.format(file=name)))
            continue
        problem = local_file_problem(root / name, root=root)
        if problem:
            summary.skipped.append(SkippedFile(name, problem))
            continue
        relative = path.relative_to(root).as_posix()
        article_id = row.pop("article_id") or Path(relative).with_suffix("").as_posix()
        title = row.pop("title", "") or _title(path.stem)
        category = row.pop("category", "")
        metadata = {"source_file": relative, **{k: v for k, v in row.items() if v}}
        entries.append(_Entry(path, relative, article_id, title, category, metadata))
    photos = folder_photos(root, extensions=IMAGE_EXTENSIONS).files
    summary.not_listed = len({Path(os.path.realpath(p)) for p in photos} - listed)
    return entries


def _title(stem: str) -> str:
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def _upsert(entry: _Entry, *, conf: Any, dry_run: bool) -> str:
    data = local_file_read(entry.file, max_bytes=conf.download_max_bytes)
    info = validate_image_bytes(data, max_pixels=conf.download_max_pixels)
    sha256 = hashlib.sha256(data).hexdigest()
    url = entry.file.as_uri()
    name = article_image_path(entry.article_id, info.ext)
    wanted = {
        "title": entry.title, "category": entry.category, "metadata": entry.metadata,
        "image_url": url, "is_active": True,
    }
    article = Article.objects.filter(article_id=entry.article_id).first()
    if article is not None:
        same_fields = all(getattr(article, key) == value for key, value in wanted.items())
        same_image = (
            article.image_sha256 == sha256 and article.image.name == name
            and article.download_status == Article.DownloadStatus.DOWNLOADED
            and ImageFiles().exists(name)
        )
        if same_fields and same_image:
            return "unchanged"
    if dry_run:
        return "created" if article is None else "updated"
    with transaction.atomic():
        article, created = Article.objects.update_or_create(
            article_id=entry.article_id, defaults=wanted
        )
        article_image_store(article=article, data=data, source_url=url, info=info)
    return "created" if created else "updated"
