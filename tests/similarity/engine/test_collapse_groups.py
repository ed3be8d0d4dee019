"""Collapsing near-copies in ranked answers; duplicate groups as greedy stars and connected
components (on arrays)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from similarity.engine.index import collapse_ranked, connected_components, star_groups


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_collapse_folds_copies_into_the_better_ranked_result():
    rng = np.random.default_rng(0)
    base = unit(rng.standard_normal((4, 32)))
    copy_of_0 = unit(base[:1] + 0.01 * rng.standard_normal(32))[0]
    copy_of_1 = unit(base[1:2] + 0.01 * rng.standard_normal(32))[0]
    ranked = np.stack([base[0], copy_of_0, base[1], copy_of_0, copy_of_1, base[2], base[3]])
    kept = collapse_ranked(ranked, threshold=0.05, k=3)
    assert [f.position for f in kept] == [0, 2, 5]
    assert [p for p, _ in kept[0].duplicates] == [1, 3]
    assert [p for p, _ in kept[1].duplicates] == [4]
    assert all(0 <= d <= 0.05 for f in kept for _, d in f.duplicates)


def test_collapse_keeps_folding_after_k_and_keeps_k_when_enough_exist():
    rng = np.random.default_rng(1)
    base = unit(rng.standard_normal((10, 16)))
    ranked = np.concatenate([base, base[:3]])  # exact copies ranked after everything
    kept = collapse_ranked(ranked, threshold=0.0, k=10)
    assert len(kept) == 10
    assert [p for p, _ in kept[0].duplicates] == [10]
    assert collapse_ranked(ranked, threshold=0.0, k=2)[1].duplicates == [(11, 0.0)]


def test_collapse_folds_into_the_nearest_kept_result():
    far = unit(np.array([[1, 0, 0], [0.9, 0.44, 0], [0.95, 0.3, 0]]))
    # position 2 is within 0.1 of both kept results; it goes to the nearer one (1)
    kept = collapse_ranked(far, threshold=0.1, k=1)
    assert len(kept) == 1
    two = collapse_ranked(far, threshold=0.05, k=3)
    assert [f.position for f in two] == [0, 1]
    assert [p for p, _ in two[1].duplicates] == [2]


@pytest.mark.parametrize(("threshold", "k"), [(-0.1, 3), (0.1, 0)])
def test_collapse_rejects_bad_arguments(threshold, k):
    with pytest.raises(ValueError, match="got"):
        collapse_ranked(np.eye(3, dtype=np.float32), threshold=threshold, k=k)


def brute_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    distances = 1 - vectors @ vectors.T
    rows, cols = np.nonzero(np.triu(distances < threshold, k=1))
    return rows.astype(np.int64), cols.astype(np.int64), distances[rows, cols]


def test_star_groups_never_hold_a_pair_over_the_threshold_on_a_chain():
    # A chain of look-alikes: each step is close, the ends are far apart.
    angles = np.linspace(0, 0.9, 40)
    chain = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    threshold = 0.01
    first, second, distance = brute_pairs(chain, threshold)
    groups = star_groups(first, second, distance)
    distances = 1 - chain @ chain.T
    for group in groups:
        for a, b in itertools.combinations(group.members, 2):
            assert distances[a, b] < threshold, (group, a, b)
    assert max(len(g.members) for g in groups) < 40  # single linkage would give one group of 40
    grouped = [m for g in groups for m in g.members]
    assert len(grouped) == len(set(grouped))


def test_star_groups_on_clusters_pick_the_best_connected_representative():
    rng = np.random.default_rng(2)
    centres = unit(rng.standard_normal((30, 64)))
    vectors = unit(np.repeat(centres, 5, axis=0) + 0.02 * rng.standard_normal((150, 64)))
    first, second, distance = brute_pairs(vectors, 0.05)
    groups = star_groups(first + 1000, second + 1000, distance)  # ids need not start at 0
    assert sorted(len(g.members) for g in groups) == [5] * 30
    for group in groups:
        assert group.members[0] == group.representative
        assert len({(m - 1000) // 5 for m in group.members}) == 1


def test_star_groups_empty_and_mismatched_input():
    assert star_groups(np.empty(0), np.empty(0), np.empty(0)) == []
    with pytest.raises(ValueError, match="one distance per pair"):
        star_groups(np.array([1]), np.array([2]), np.array([0.1, 0.2]))


def test_connected_components_chain_largest_first():
    """Single linkage chains: what the evaluation scores groups by (stars never chain)."""
    pairs = [(5, 6), (1, 2), (2, 3), (3, 4), (9, 8)]
    assert connected_components(pairs) == [[1, 2, 3, 4], [5, 6], [8, 9]]
    assert connected_components([]) == []
    assert connected_components([(7, 7)]) == [[7]]
