"""Files that are either complete or absent: temp file in the same directory, fsync, rename."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (before it is renamed into place)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path | str, *, prefix: str = ".") -> Iterator[Path]:
    """A temp path beside ``path`` to write; on success it replaces ``path``, else it goes.

    The temp name (``prefix``, the file name, pid, random hex) is never shared by another
    process or container. On a clean exit the file is fsynced, renamed onto ``path`` with
    ``os.replace`` and the directory fsynced; on any error ``path`` is untouched.
    """
    target = Path(path)
    temporary = target.with_name(f"{prefix}{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        fsync_file(temporary)
        os.replace(temporary, target)
        fsync_dir(target.parent)
    finally:
        temporary.unlink(missing_ok=True)  # no-op after a successful replace


def atomic_write_bytes(path: Path | str, data: bytes, *, prefix: str = ".") -> None:
    """Write ``data`` to ``path`` through ``atomic_path``."""
    with atomic_path(path, prefix=prefix) as temporary:
        temporary.write_bytes(data)


@contextmanager
def atomic_text_file(path: Path | str) -> Iterator[IO[str]]:
    """Write text to ``path`` via a temp file beside it; on any error ``path`` is untouched."""
    with (
        atomic_path(Path(path).resolve()) as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as out,
    ):
        yield out
