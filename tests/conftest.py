"""Shared fixtures: every test gets its own data dir and media root under tmp_path."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.loopback import LoopbackServer

# Processes the tests start (manage.py, gunicorn, qcluster) keep ONNX exports and `auto`'s
# choices in one throwaway directory for the session, never in the machine's own cache.
if "LOOKALIKE_MODEL_CACHE_DIR" not in os.environ:
    _session_cache = tempfile.mkdtemp(prefix="lookalike-test-model-cache-")
    os.environ["LOOKALIKE_MODEL_CACHE_DIR"] = _session_cache
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path: Path) -> Path:
    """Point the data dir (indexes), MEDIA_ROOT (images) and the per-machine model cache
    (ONNX exports, `auto`'s choices) at fresh temp directories."""
    root = tmp_path / "data"
    root.mkdir()
    settings.DATA_DIR = root
    settings.MEDIA_ROOT = root / "media"
    settings.MODEL_CACHE_DIR = tmp_path / "model-cache"  # never the machine's own cache
    return root


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 for the test to register routes on."""
    with LoopbackServer() as server:
        yield server
