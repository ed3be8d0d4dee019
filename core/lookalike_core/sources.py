"""Supplier sources for matching: a folder of photos, a CSV or JSON Lines feed, a safe zip.

In the core: the server's match runs and the light client read sources the same way.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lookalike_core.localfiles import folder_photos
from lookalike_core.tabular import TabularError, TabularFile, tabular_kind, tabular_open

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
REQUIRED_COLUMNS = ("supplier_ref", "image_url")
COPY_CHUNK = 1024 * 1024

MSG_MISSING_SOURCE = "{path}: no such file or folder"
MSG_FORMAT = (
    "{path}: not a folder of photos, a CSV (.csv) or a JSON Lines (.jsonl, .ndjson) file"
)
MSG_REPEATED = "supplier_ref repeated (first on line {line}); only the first row is matched"
MSG_MISSING_REF = "missing supplier_ref"
MSG_MISSING_URL = "missing image_url"
MSG_ZIP_BAD = "{name}: not a readable zip file: {error}"
MSG_ZIP_ENTRY = "{name}: entry {entry!r} would be written outside the folder; refused"
MSG_ZIP_LINK = "{name}: entry {entry!r} is a symbolic link; refused"
MSG_ZIP_FILES = "{name}: more than {limit} files (MATCH_ZIP_MAX_FILES); refused"
MSG_ZIP_BYTES = "{name}: more than {limit} bytes once extracted (MATCH_ZIP_MAX_BYTES); refused"


class MatchSourceError(Exception):
    """The source as a whole cannot be used (missing, unreadable, wrong format, no header)."""


@dataclass(frozen=True)
class SupplierRow:
    """One supplier photo to match: fetched from ``image_url`` or read from ``path``."""

    supplier_ref: str
    line: int  # line number in a feed, position in a folder
    image_url: str = ""
    path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    error: str = ""  # the row itself is unusable; reported as an error, never fetched


@dataclass(frozen=True)
class SupplierSource:
    """An opened source: its extra columns (None = free-form, per row) and its rows (lazy)."""

    path: Path
    kind: str  # folder, csv or jsonl
    extra_columns: list[str] | None
    feed: TabularFile | None = None  # a CSV or JSON Lines feed (lookalike_core.tabular)

    def count(self) -> int:
        """How many rows the source holds (one streaming pass; for the progress bar)."""
        return sum(1 for _ in self.rows())

    def rows(self) -> Iterator[SupplierRow]:
        if self.feed is None:
            return _folder_rows(self.path)
        return _feed_rows(self.feed)


def supplier_source_open(*, path: Path | str) -> SupplierSource:
    """The source at ``path``; MatchSourceError when it cannot be used at all.

    A folder: every photo under it (by extension, sorted), ``supplier_ref`` its relative
    path without extension. A CSV or JSON Lines feed (read as the catalog import reads its
    feeds): ``supplier_ref`` and ``image_url`` per row, other columns kept. Rows are read
    lazily, so memory stays flat.
    """
    path = Path(path)
    if path.is_dir():
        return SupplierSource(path=path, kind="folder", extra_columns=[])
    if not path.is_file():
        raise MatchSourceError(MSG_MISSING_SOURCE.format(path=path))
    if tabular_kind(path) is None and path.suffix.lower() != ".json":
        raise MatchSourceError(MSG_FORMAT.format(path=path))
    try:
        feed = tabular_open(path, required=REQUIRED_COLUMNS)
    except TabularError as exc:
        raise MatchSourceError(str(exc)) from exc
    extra_columns = (
        None if feed.columns is None
        else [name for name in feed.columns if name and name not in REQUIRED_COLUMNS]
    )
    return SupplierSource(path=path, kind=feed.kind, extra_columns=extra_columns, feed=feed)


def pending_rows(rows: Iterator[SupplierRow], done: set[str]) -> Iterator[SupplierRow]:
    """Rows not in the report yet; a ref seen earlier in this source becomes an error row."""
    first_line: dict[str, int] = {}
    for row in rows:
        if row.supplier_ref in first_line:
            yield SupplierRow(supplier_ref=f"{row.supplier_ref} (line {row.line})",
                              line=row.line, extra=row.extra,
                              error=MSG_REPEATED.format(line=first_line[row.supplier_ref]))
            continue
        first_line[row.supplier_ref] = row.line
        if row.supplier_ref not in done:
            yield row


def _folder_rows(root: Path) -> Iterator[SupplierRow]:
    """The folder's photos in path order; what is not a regular file inside the folder (a
    link out of it, a loop, a FIFO, a device) is an error row with the reason."""
    listing = folder_photos(root, extensions=IMAGE_EXTENSIONS)
    base = Path(listing.root)
    found: list[tuple[str, Path | None, str]] = [
        (path.relative_to(base).as_posix(), path, "") for path in listing.files]
    found += [(relative, None, reason) for relative, reason in listing.skipped]
    for position, (relative, path, reason) in enumerate(sorted(found), start=1):
        ref = str(PurePosixPath(relative).with_suffix(""))
        yield SupplierRow(supplier_ref=ref, line=position, path=path, error=reason)


def _feed_rows(feed: TabularFile) -> Iterator[SupplierRow]:
    try:
        for line, record in feed.records():
            if isinstance(record, str):  # the line is unreadable: an error row
                yield SupplierRow(supplier_ref=f"line {line}", line=line, error=record)
            else:
                yield _row(record, line=line)
    except TabularError as exc:
        raise MatchSourceError(str(exc)) from exc


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def _row(values: dict[str, Any], *, line: int) -> SupplierRow:
    ref = _text(values.get("supplier_ref"))
    url = _text(values.get("image_url"))
    extra = {str(key): _text(value) for key, value in values.items()
             if key and key not in REQUIRED_COLUMNS}
    error = MSG_MISSING_REF if not ref else MSG_MISSING_URL if not url else ""
    return SupplierRow(supplier_ref=ref or f"line {line}", line=line, image_url=url,
                       extra=extra, error=error)


def zip_extract_safe(
    *, archive: Path, destination: Path, max_files: int, max_bytes: int
) -> int:
    """Extract the files of ``archive`` under ``destination``; the number of files written.

    Refused as a whole (MatchSourceError, nothing left behind) when an entry is absolute,
    climbs out with ``..``, is a symbolic link, or when the archive holds more than
    ``max_files`` files or ``max_bytes`` once extracted. Sizes are counted while the data
    is read, never taken from the archive's own headers.
    """
    name = archive.name
    try:
        with zipfile.ZipFile(archive) as bundle:
            entries = [entry for entry in bundle.infolist() if not entry.is_dir()]
            if len(entries) > max_files:
                raise MatchSourceError(MSG_ZIP_FILES.format(name=name, limit=max_files))
            targets = [_zip_target(name, entry, destination) for entry in entries]
            written = 0
            destination.mkdir(parents=True, exist_ok=True)
            try:
                for entry, target in zip(entries, targets, strict=True):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(entry) as source, target.open("wb") as sink:
                        while chunk := source.read(COPY_CHUNK):
                            written += len(chunk)
                            if written > max_bytes:
                                raise MatchSourceError(
                                    MSG_ZIP_BYTES.format(name=name, limit=max_bytes))
                            sink.write(chunk)
            except BaseException:
                shutil.rmtree(destination, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise MatchSourceError(MSG_ZIP_BAD.format(name=name, error=exc)) from exc
    return len(entries)


def _zip_target(name: str, entry: zipfile.ZipInfo, destination: Path) -> Path:
    """Where ``entry`` goes under ``destination``; MatchSourceError if anywhere else."""
    mode = entry.external_attr >> 16
    if (mode & 0o170000) == 0o120000:
        raise MatchSourceError(MSG_ZIP_LINK.format(name=name, entry=entry.filename))
    text = entry.filename.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if (not parts or text.startswith("/") or ".." in parts or ":" in parts[0]
            or any(part in ("", ".") for part in parts)):
        raise MatchSourceError(MSG_ZIP_ENTRY.format(name=name, entry=entry.filename))
    target = destination.joinpath(*parts)
    if not target.resolve().is_relative_to(destination.resolve()):
        raise MatchSourceError(MSG_ZIP_ENTRY.format(name=name, entry=entry.filename))
    return target
