"""members.npy: which embedding each id of a build's index came from (for incremental updates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MEMBERS_ARRAY = "members"
MEMBERS_FILE = f"{MEMBERS_ARRAY}.npy"


def members_table(*, ids: np.ndarray, embedding_pks: np.ndarray) -> np.ndarray:
    """The (n, 2) int64 table written as members.npy: (id, embedding pk) rows, sorted by id."""
    if len(ids) != len(embedding_pks):
        raise ValueError(f"need one embedding pk per id; got {len(ids)} ids, {len(embedding_pks)}")
    order = np.argsort(ids, kind="stable")
    return np.stack([ids[order], embedding_pks[order]], axis=1).astype(np.int64)


def read_members(build_path: Path) -> np.ndarray:
    """The (id, embedding pk) pairs of a build, sorted by id."""
    members: np.ndarray = np.load(Path(build_path) / MEMBERS_FILE, allow_pickle=False)
    return members


def members_exist(build_path: Path) -> bool:
    return (Path(build_path) / MEMBERS_FILE).exists()
