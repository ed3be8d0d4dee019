"""Groups over a pair list: greedy stars of mutually close items (duplicate groups) and
connected components (single linkage, what the evaluation scores groups by)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np


class StarGroup(NamedTuple):
    """A representative and the members close to it and to each other (representative first)."""

    representative: int
    members: list[int]  # ids: the representative, then the others nearest it first


def star_groups(first: np.ndarray, second: np.ndarray, distance: np.ndarray) -> list[StarGroup]:
    """Groups in which every pair is an edge of the graph (``first[i]``, ``second[i]``).

    Greedy stars: the item with the most ungrouped neighbors becomes a representative;
    its ungrouped neighbors join, nearest first, when they are neighbors of every member
    already in (so each group is a clique of the graph: with edges = pairs closer than a
    threshold, no two members of a group are farther apart than it). The members leave the
    graph and the next representative is chosen among the rest. Ties go to the smaller id.
    The graph is held as sorted arrays (CSR), a few bytes per edge, never a Python object
    per edge. Largest group first, then by representative id.
    """
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    distance = np.asarray(distance, dtype=np.float64)
    if not (len(first) == len(second) == len(distance)):
        raise ValueError(
            f"need one distance per pair; got {len(first)}, {len(second)}, {len(distance)}"
        )
    if not len(first):
        return []
    nodes, inverse = np.unique(np.concatenate((first, second)), return_inverse=True)
    count, edges = len(nodes), len(first)
    rows = np.concatenate((inverse[:edges], inverse[edges:]))
    cols = np.concatenate((inverse[edges:], inverse[:edges]))
    weights = np.concatenate((distance, distance))
    order = np.lexsort((cols, rows))
    rows, cols, weights = rows[order], cols[order], weights[order]
    bounds = np.searchsorted(rows, np.arange(count + 1))
    grouped = np.zeros(count, dtype=bool)

    def neighbors(node: int) -> tuple[np.ndarray, np.ndarray]:
        return cols[bounds[node] : bounds[node + 1]], weights[bounds[node] : bounds[node + 1]]

    degrees = np.diff(bounds)
    heap = [(-int(degrees[node]), int(nodes[node]), node) for node in range(count)]
    heapq.heapify(heap)
    groups: list[StarGroup] = []
    while heap:
        negative_degree, _, node = heapq.heappop(heap)
        if grouped[node]:
            continue
        near, near_distance = neighbors(node)
        free = ~grouped[near]
        degree = int(free.sum())
        if degree == 0:
            continue
        if degree != -negative_degree:  # stale: neighbors were grouped since it was pushed
            heapq.heappush(heap, (-degree, int(nodes[node]), node))
            continue
        candidates, candidate_distance = near[free], near_distance[free]
        members = [node]
        for candidate in candidates[np.lexsort((nodes[candidates], candidate_distance))]:
            others = members[1:]  # every candidate is a neighbor of the representative
            if others and not _contains_all(neighbors(int(candidate))[0], others):
                continue
            members.append(int(candidate))
        grouped[members] = True
        groups.append(StarGroup(int(nodes[node]), [int(nodes[m]) for m in members]))
    groups.sort(key=lambda group: (-len(group.members), group.representative))
    return groups


def _contains_all(sorted_values: np.ndarray, wanted: list[int]) -> bool:
    spots = np.searchsorted(sorted_values, wanted)
    inside = spots < len(sorted_values)
    return bool(inside.all() and np.array_equal(sorted_values[spots], wanted))


class UnionFind:
    """Disjoint sets over int ids: path compression + union by size."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}

    def find(self, item: int) -> int:
        if item not in self.parent:
            self.parent[item] = item
            self.size[item] = 1
            return item
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        a, b = self.find(first), self.find(second)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]

    def groups(self) -> list[list[int]]:
        members: dict[int, list[int]] = {}
        for item in self.parent:
            members.setdefault(self.find(item), []).append(item)
        return [sorted(group) for group in members.values()]


def connected_components(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Groups (sorted ids) of the graph of ``pairs``, largest first, then by smallest id."""
    sets = UnionFind()
    for first, second in pairs:
        sets.union(first, second)
    return sorted(sets.groups(), key=lambda group: (-len(group), group[0]))
