"""Fold near-copies in a ranked answer into the better-ranked result they duplicate."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

ERR_THRESHOLD = "threshold must be >= 0; got {threshold}"

# How many candidates a collapsed answer asks the index for, per wanted result: most pages
# have a few near-copies, rarely more than three per kept result.
COLLAPSE_FETCH_FACTOR = 4


class Folded(NamedTuple):
    """One kept result (its position in the ranked input) and the positions folded into it."""

    position: int
    duplicates: list[tuple[int, float]]  # (position, distance to the kept result), rank order


def collapse_ranked(vectors: np.ndarray, *, threshold: float, k: int) -> list[Folded]:
    """Keep up to ``k`` results of a ranked list, folding duplicates into better-ranked ones.

    ``vectors`` are the L2-normalised vectors of the ranked results (best first). A result
    whose cosine distance to an already kept result is <= ``threshold`` is folded into the
    nearest such kept result (the better-ranked one on a tie) instead of being kept. Once
    ``k`` results are kept, later results are only folded, never kept. Returns the kept
    results in rank order with their folded positions.
    """
    if threshold < 0:
        raise ValueError(ERR_THRESHOLD.format(threshold=threshold))
    if k <= 0:
        raise ValueError(f"k must be > 0; got {k}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array; got shape {vectors.shape}")
    kept: list[int] = []
    folded: dict[int, list[tuple[int, float]]] = {}
    for position in range(len(vectors)):
        if kept:
            distances = np.maximum(1.0 - vectors[kept] @ vectors[position], 0.0)
            nearest = int(np.argmin(distances))  # first minimum: the better-ranked on ties
            if distances[nearest] <= threshold:
                folded[kept[nearest]].append((position, float(distances[nearest])))
                continue
        if len(kept) < k:
            kept.append(position)
            folded[position] = []
    return [Folded(position, folded[position]) for position in kept]
