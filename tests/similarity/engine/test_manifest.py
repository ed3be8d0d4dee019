"""Tests for the typed build manifest and the members file of the engine's index layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from similarity.engine.index import (
    BuildManifest,
    build_index,
    current_build,
    members_table,
    read_manifest,
    read_members,
    set_current,
    write_build,
)
from similarity.engine.index.members import MEMBERS_ARRAY
from similarity.engine.index.storage import BUILDS_DIR, INDEX_FILE

# A manifest as the build service wrote it before BuildManifest existed.
OLD_MANIFEST = {
    "build_id": 7,
    "count": 3,
    "created_at": "2026-11-01T10:00:00+00:00",
    "dimension": 4,
    "factory": "IDMap2,Flat",
    "faiss_version": "1.9.0",
    "index_type": "flat",
    "input_checksum": "ab" * 32,
    "mode": "full",
    "model": "classic",
    "model_identity": "classic@v1",
    "recall_at_10": None,
    "runtime": "torch",
    "runtime_agreement": None,
    "runtime_skipped": [],
    "supports_text": False,
    "some_future_key": {"nested": [1, 2]},
}


def test_old_manifest_round_trips_with_unknown_keys_kept():
    manifest = BuildManifest.from_dict(OLD_MANIFEST)
    assert (manifest.model, manifest.build_id, manifest.supports_text) == ("classic", 7, False)
    assert manifest.extra["some_future_key"] == {"nested": [1, 2]}
    assert manifest.to_dict() == OLD_MANIFEST
    assert manifest["runtime"] == "torch" and manifest.get("missing") is None  # Mapping view


def test_optional_keys_are_not_written_when_unset():
    manifest = BuildManifest(model="m", index_type="flat", factory="Flat", input_checksum="c")
    assert "build_id" not in manifest.to_dict() and "supports_text" not in manifest.to_dict()


def test_missing_required_keys_are_named():
    with pytest.raises(ValueError, match="missing factory, input_checksum"):
        BuildManifest.from_dict({"model": "m", "index_type": "flat"})


def test_old_build_on_disk_still_loads_and_serves(tmp_path):
    vectors = np.eye(4, dtype=np.float32)[:3]
    ids = np.array([3, 1, 2], dtype=np.int64)
    write_build(tmp_path, build_index(vectors, ids), BuildManifest.from_dict(OLD_MANIFEST))
    [build] = (tmp_path / BUILDS_DIR).iterdir()
    (build / "manifest.json").write_text(json.dumps(OLD_MANIFEST))  # as an old version wrote it
    set_current(tmp_path, build.name)
    info = current_build(tmp_path)
    assert info is not None and info.manifest.to_dict() == OLD_MANIFEST
    assert read_manifest(build) == info.manifest


def test_build_without_required_keys_is_ignored(tmp_path, caplog):
    build = tmp_path / BUILDS_DIR / "20260101T000000000000Z-deadbeef"
    build.mkdir(parents=True)
    (build / INDEX_FILE).write_bytes(b"")
    (build / "manifest.json").write_text(json.dumps({"model": "m"}))
    (tmp_path / "CURRENT").write_text(build.name)
    assert current_build(tmp_path) is None
    assert "missing index_type" in caplog.text


def test_members_file_is_sorted_by_id_and_read_back(tmp_path):
    ids = np.array([30, 10, 20], dtype=np.int64)
    table = members_table(ids=ids, embedding_pks=np.array([3, 1, 2], dtype=np.int64))
    index = build_index(np.eye(4, dtype=np.float32)[:3], ids)
    manifest = BuildManifest(model="m", index_type="flat", factory="Flat", input_checksum="c")
    path = write_build(tmp_path, index, manifest, arrays={MEMBERS_ARRAY: table})
    assert read_members(path).tolist() == [[10, 1], [20, 2], [30, 3]]
    with pytest.raises(ValueError, match="3 ids, 2"):
        members_table(ids=ids, embedding_pks=np.array([1, 2], dtype=np.int64))


def test_mapping_view_matches_the_json_keys():
    manifest = BuildManifest.from_dict({**OLD_MANIFEST, "build_id": None})
    assert dict(manifest) == manifest.to_dict()
    assert "build_id" not in manifest and manifest.get("build_id", "absent") == "absent"
    assert manifest["some_future_key"] == {"nested": [1, 2]} and manifest["count"] == 3
    with pytest.raises(KeyError):
        manifest["extra"]
