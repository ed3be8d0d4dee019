"""The local-feature store under a bad day: damaged files read as absent, a failed write
(a full disk) loses nothing but the cache entry and leaves no temp file behind."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.engine.verification import FeatureStore, extract_features
from similarity.engine.verification.features import features_bytes


def features():
    rng = np.random.default_rng(3)
    return extract_features(Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)))


SHA = hashlib.sha256(b"photo").hexdigest()


@pytest.mark.parametrize("content", [
    b"PK\x03\x04 truncated zip",  # looks like an .npz, is not one
    b"",
    b"not numpy at all",
    "half",  # the first half of a real file
])
def test_a_damaged_file_reads_as_absent(tmp_path: Path, content):
    store = FeatureStore(tmp_path, memory_items=0)
    path = store.path(SHA)
    path.parent.mkdir(parents=True)
    if content == "half":
        whole = features_bytes(features())
        content = whole[: len(whole) // 2]
    path.write_bytes(content)
    assert store.get(SHA) is None


def test_a_failed_write_is_not_an_error_and_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    store = FeatureStore(tmp_path)

    def disk_full(self: Path, data: bytes) -> int:
        self.parent.mkdir(parents=True, exist_ok=True)
        with self.open("wb") as handle:
            handle.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    computed = features()
    store.put(SHA, computed)  # the caller has its features: storing them is only a cache
    assert not store.path(SHA).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert store.get(SHA) is computed  # still remembered in memory for this process
