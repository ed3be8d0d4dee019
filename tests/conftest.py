"""Shared fixtures: every test gets its own data dir and media root under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.loopback import LoopbackServer


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path: Path) -> Path:
    """Point the data dir (indexes) and MEDIA_ROOT (images) at a fresh temp directory."""
    root = tmp_path / "data"
    root.mkdir()
    settings.DATA_DIR = root
    settings.MEDIA_ROOT = root / "media"
    return root


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 for the test to register routes on."""
    with LoopbackServer() as server:
        yield server
