"""Photos read from a local folder: regular files only, never a link out of the folder, never
a FIFO, a device or a link loop (each skipped with its reason); reads bounded in size."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MSG_OUTSIDE_LINK = "symbolic link to a file outside the folder"
MSG_LINK_LOOP = "symbolic link loop"
MSG_BROKEN_LINK = "symbolic link to a missing file"
MSG_NOT_REGULAR = "not a regular file ({kind})"
MSG_TOO_LARGE = "file is over the limit of {limit} bytes"

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
)


class LocalFileError(OSError):
    """A folder entry that is not a readable photo file; the message says why."""


@dataclass
class FolderListing:
    """The photo files under a folder (sorted by relative path) and the entries skipped."""

    root: Path  # the folder, resolved: every file is below it
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def folder_photos(root: Path, *, extensions: Iterable[str]) -> FolderListing:
    """The regular files under ``root`` with one of ``extensions`` (lower case, with the dot).

    Hidden names are left out; symbolic links to directories are not descended; a symbolic
    link to a file is kept only when it resolves inside ``root``. Entries that are not
    regular files, links out of the folder, loops and broken links are skipped with the
    reason. The paths are as listed (not resolved), so ids derived from them stay stable.
    """
    wanted = {extension.lower() for extension in extensions}
    root = Path(os.path.realpath(root))
    listing = FolderListing(root=root)
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or Path(name).suffix.lower() not in wanted:
                continue
            path = Path(folder, name)
            problem = local_file_problem(path, root=root)
            if problem:
                listing.skipped.append((path.relative_to(root).as_posix(), problem))
            else:
                listing.files.append(path)
    listing.files.sort(key=lambda path: path.relative_to(root).as_posix())
    return listing


def local_file_problem(path: Path, *, root: Path) -> str | None:
    """Why ``path`` (under ``root``, resolved) cannot be read as a photo, or None."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(root):
                return MSG_OUTSIDE_LINK
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return MSG_BROKEN_LINK
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return MSG_LINK_LOOP
        return str(exc)
    return None if stat.S_ISREG(mode) else MSG_NOT_REGULAR.format(kind=_kind(mode))


def local_file_read(path: Path, *, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of the regular file at ``path``; LocalFileError otherwise.

    Opened without blocking (a FIFO put in place after listing does not hang the reader)
    and checked on the open handle, so what is read is what was checked; a device is never
    read, whatever size it reports.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise LocalFileError(MSG_NOT_REGULAR.format(kind=_kind(mode)))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LocalFileError(MSG_TOO_LARGE.format(limit=max_bytes))
    return data


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a file")
