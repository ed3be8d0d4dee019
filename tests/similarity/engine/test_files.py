"""Tests for the one atomic-write helper of the engine."""

from __future__ import annotations

import pytest

from similarity.engine.files import atomic_path, atomic_text_file, atomic_write_bytes


def test_success_replaces_the_file_and_leaves_no_temp(tmp_path):
    tmp_path = tmp_path / "files"  # tmp_path also holds the autouse fixtures' data dir
    tmp_path.mkdir()
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    with atomic_text_file(tmp_path / "out.csv") as out:
        out.write("a,b\n")
    assert target.read_bytes() == b"new"
    assert (tmp_path / "out.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "out.csv"]


def test_error_leaves_the_old_file_and_no_temp(tmp_path):
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    target = tmp_path / "CURRENT"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="writer died"), atomic_path(
        target, prefix=".tmp-"
    ) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".tmp-CURRENT.")
        temporary.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]
