"""Labelled retrieval scores on hand-made vectors, and the labels file."""

from __future__ import annotations

import numpy as np
import pytest

from similarity.services.evaluation.labelled import (
    Labels,
    _exact_neighbors,
    format_scores_table,
    labels_read,
    retrieval_scores,
)


def unit(*rows: list[float]) -> np.ndarray:
    array = np.array(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


# a1 ~ a2 (product a), b1 far; c1 near a (same category "fruit", other product).
NAMES = ["a1", "a2", "c1", "b1"]
VECTORS = unit([1, 0, 0], [0.95, 0.3, 0], [0.8, 0.6, 0], [0, 0, 1])
LABELS = Labels(
    product={"a1": "a", "a2": "a", "c1": "c", "b1": "b"},
    category={"a1": "fruit", "a2": "fruit", "c1": "fruit", "b1": "drink"},
    kind={"a1": "packshot", "a2": "store_photo", "c1": "packshot", "b1": "store_photo"},
)


def test_product_category_and_supplier_scores():
    scores = retrieval_scores(names=NAMES, vectors=VECTORS, labels=LABELS, k=2,
                              query_kind="store_photo", catalog_kind="packshot")
    # Only product a has two items: a1's nearest is a2, a2's nearest is a1 (0.95 > 0.92).
    assert scores.product_queries == 2 and scores.product_hit_at_1 == 1.0
    assert scores.product_recall_at_5 == 1.0 and scores.product_map_at_k == 1.0
    # fruit queries (3): a1 -> a2, c1 (2/2); a2 -> a1, c1 (2/2); c1 -> a2, a1 (2/2).
    assert scores.category_queries == 3 and scores.category_precision_at_k == 1.0
    # Supplier: a2 (store photo of a) against packshots {a1, c1}: a1 first. b1 has no packshot.
    assert scores.supplier_queries == 1
    assert scores.supplier_hit_at_1 == 1.0 and scores.supplier_hit_at_5 == 1.0
    table = format_scores_table([("m", scores)])
    assert "store_photo->packshot hit@1" in table and "1.000" in table


def test_a_wrong_neighbor_lowers_the_scores():
    moved = VECTORS.copy()
    moved[1] = unit([0.7, 0.7, 0.1])[0]  # a2 turned towards c1: a1 and a2 both see c1 first
    scores = retrieval_scores(names=NAMES, vectors=moved, labels=LABELS, k=1)
    assert scores.product_hit_at_1 == 0.0 and scores.product_recall_at_k == 0.0
    assert scores.product_recall_at_5 == 1.0  # a2 is still within the top 5 (of 3)


def test_exact_neighbors_exclude_self_and_rank_by_cosine():
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = _exact_neighbors(vectors, vectors, 5, exclude_self=True)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    assert (found == np.argsort(-similarity, axis=1)[:, :5]).all()


def test_labels_file_columns(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("article_id,group\nA,g1\nB,g1\n")
    assert labels_read(path=old).product == {"A": "g1", "B": "g1"}
    new = tmp_path / "new.csv"
    new.write_text("article_id,product,category,kind\nA,p,cat,packshot\nB,,cat,\n")
    labels = labels_read(path=new)
    assert (labels.product, labels.category, labels.kind) == (
        {"A": "p"}, {"A": "cat", "B": "cat"}, {"A": "packshot"})
    bad = tmp_path / "bad.csv"
    bad.write_text("article_id,colour\nA,red\n")
    with pytest.raises(ValueError, match="at least one of group, product, category"):
        labels_read(path=bad)
    with pytest.raises(ValueError, match="kind column"):
        retrieval_scores(names=["A"], vectors=np.ones((1, 2), np.float32),
                         labels=labels_read(path=old), query_kind="x", catalog_kind="y")
