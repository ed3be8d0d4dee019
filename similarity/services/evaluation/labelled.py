"""Labelled retrieval quality: same-product, same-category and supplier (kind -> kind) scores.

Scores come from exact cosine kNN over the stored, L2-normalised vectors (the query itself
excluded), so they measure the model, not the index type. Definitions, per query:
- product recall@n: same-product items in the top n / min(n, other items of the product);
- product hit@1: the nearest other item is the same product; mAP@k as usual (capped ideal);
- category precision@k: same-category items in the top k / k;
- supplier hit@1 / hit@5: a query of ``query_kind`` (e.g. ``store_photo``) searched among
  the items of ``catalog_kind`` only (e.g. ``packshot``) finds its product first / in the top 5.
Only queries whose product (category) has at least one other item count.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from similarity.selectors.validation import validate_k

MSG_LABELS_MISSING = "labels file not found: {path}"
MSG_LABELS_COLUMNS = (
    "labels file {path} needs the column article_id and at least one of group, product, "
    "category; got {columns}"
)
MSG_KIND_COLUMN = "--query-kind/--catalog-kind need a kind column in the labels file {path}"
SCORES_PER_BATCH = 1 << 24  # query x base similarities held at once (64 MB of float32)
RECALL_AT = 5
SUPPLIER_AT = 5


@dataclass
class Labels:
    """Per article_id: product (fine class; the old ``group`` column), category, kind."""

    path: str = ""
    product: dict[str, str] = field(default_factory=dict)
    category: dict[str, str] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)


@dataclass
class RetrievalScores:
    k: int
    product_queries: int = 0
    product_recall_at_5: float | None = None
    product_recall_at_k: float | None = None
    product_hit_at_1: float | None = None
    product_map_at_k: float | None = None
    category_queries: int = 0
    category_precision_at_k: float | None = None
    query_kind: str = ""
    catalog_kind: str = ""
    supplier_queries: int = 0
    supplier_hit_at_1: float | None = None
    supplier_hit_at_5: float | None = None


def labels_read(*, path: Path | str) -> Labels:
    """The labels CSV (article_id + group/product, category, kind); ValueError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(MSG_LABELS_MISSING.format(path=path))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "article_id" not in columns or not {"group", "product", "category"} & set(columns):
            raise ValueError(MSG_LABELS_COLUMNS.format(path=path, columns=",".join(columns)))
        reader.fieldnames = columns
        labels = Labels(path=str(path))
        for row in reader:
            article_id = (row.get("article_id") or "").strip()
            if not article_id:
                continue
            product = (row.get("product") or row.get("group") or "").strip()
            for mapping, value in ((labels.product, product),
                                   (labels.category, (row.get("category") or "").strip()),
                                   (labels.kind, (row.get("kind") or "").strip())):
                if value:
                    mapping[article_id] = value
    return labels


def retrieval_scores(
    *,
    names: list[str],
    vectors: np.ndarray,
    labels: Labels,
    k: int = 10,
    query_kind: str | None = None,
    catalog_kind: str | None = None,
) -> RetrievalScores:
    """Scores of ``vectors`` (row i is article ``names[i]``) against ``labels``."""
    k = validate_k(k)
    if (query_kind or catalog_kind) and not labels.kind:
        raise ValueError(MSG_KIND_COLUMN.format(path=labels.path))
    scores = RetrievalScores(k=k)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    depth = max(k, RECALL_AT)
    neighbors = _exact_neighbors(vectors, vectors, depth, exclude_self=True)
    products = [labels.product.get(n) for n in names]
    categories = [labels.category.get(n) for n in names]
    _product_scores(scores, neighbors, products, k)
    _category_scores(scores, neighbors, categories, k)
    if query_kind and catalog_kind:
        _supplier_scores(scores, vectors, names, products, labels, query_kind, catalog_kind)
    return scores


def _product_scores(scores: RetrievalScores, neighbors: np.ndarray,
                    products: list[str | None], k: int) -> None:
    sizes = Counter(p for p in products if p)
    recalls5, recallsk, hits1, aps = [], [], [], []
    for row, product in enumerate(products):
        if not product or sizes[product] < 2:
            continue
        relevant = sizes[product] - 1
        same = np.array([products[j] == product for j in neighbors[row]], dtype=bool)
        recalls5.append(same[:RECALL_AT].sum() / min(RECALL_AT, relevant))
        recallsk.append(same[:k].sum() / min(k, relevant))
        hits1.append(float(same[0]))
        top = same[:k]
        precision_at = np.cumsum(top) / np.arange(1, len(top) + 1)
        aps.append(float(precision_at[top].sum()) / min(k, relevant))
    scores.product_queries = len(hits1)
    if hits1:
        scores.product_recall_at_5 = float(np.mean(recalls5))
        scores.product_recall_at_k = float(np.mean(recallsk))
        scores.product_hit_at_1 = float(np.mean(hits1))
        scores.product_map_at_k = float(np.mean(aps))


def _category_scores(scores: RetrievalScores, neighbors: np.ndarray,
                     categories: list[str | None], k: int) -> None:
    sizes = Counter(c for c in categories if c)
    precisions = [
        sum(categories[j] == category for j in neighbors[row][:k]) / k
        for row, category in enumerate(categories)
        if category and sizes[category] > 1
    ]
    scores.category_queries = len(precisions)
    if precisions:
        scores.category_precision_at_k = float(np.mean(precisions))


def _supplier_scores(scores, vectors, names, products, labels, query_kind, catalog_kind) -> None:
    scores.query_kind, scores.catalog_kind = query_kind, catalog_kind
    kinds = [labels.kind.get(n) for n in names]
    catalog = [i for i, kind in enumerate(kinds) if kind == catalog_kind]
    catalog_products = {products[i] for i in catalog if products[i]}
    queries = [i for i, kind in enumerate(kinds)
               if kind == query_kind and products[i] in catalog_products]
    scores.supplier_queries = len(queries)
    if not queries:
        return
    found = _exact_neighbors(vectors[queries], vectors[catalog],
                              min(SUPPLIER_AT, len(catalog)), exclude_self=False)
    same = np.array([[products[catalog[j]] == products[q] for j in row]
                     for q, row in zip(queries, found, strict=True)], dtype=bool)
    scores.supplier_hit_at_1 = float(same[:, 0].mean())
    scores.supplier_hit_at_5 = float(same[:, :SUPPLIER_AT].any(axis=1).mean())


def _exact_neighbors(queries: np.ndarray, base: np.ndarray, depth: int, *,
                      exclude_self: bool) -> np.ndarray:
    """(n, depth) row indices into ``base`` by descending cosine (ties: lower index first)."""
    depth = max(min(depth, len(base) - (1 if exclude_self else 0)), 0)
    out = np.empty((len(queries), depth), dtype=np.int64)
    batch = max(1, SCORES_PER_BATCH // max(len(base), 1))
    for start in range(0, len(queries), batch):
        similarity = queries[start:start + batch] @ base.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -np.inf
        if depth < similarity.shape[1]:
            top = np.argpartition(-similarity, depth - 1, axis=1)[:, :depth] if depth else (
                np.empty((len(similarity), 0), dtype=np.int64))
        else:
            top = np.broadcast_to(np.arange(similarity.shape[1]), similarity.shape).copy()
        top = np.sort(top, axis=1)  # lower index first among equal similarities
        ranked = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-ranked, axis=1, kind="stable")
        out[start:start + batch] = np.take_along_axis(top, order, axis=1)
    return out


def format_scores_table(rows: list[tuple[str, RetrievalScores]]) -> str:
    """One line per model: product recall/hit/mAP, category precision, supplier hits."""
    if not rows:
        return ""
    k = rows[0][1].k
    supplier = next((s for _, s in rows if s.query_kind), None)
    both = k != RECALL_AT  # recall@5 and recall@k are one column when k is 5
    header = ["model", "queries", f"recall@{RECALL_AT}", *([f"recall@{k}"] if both else []),
              "hit@1", f"mAP@{k}", f"cat-P@{k}"]
    if supplier is not None:
        header += [f"{supplier.query_kind}->{supplier.catalog_kind} hit@1", "hit@5"]
    table = [header]
    for model, s in rows:
        line = [model, str(s.product_queries or s.category_queries),
                *(_num(v) for v in (s.product_recall_at_5,
                                    *([s.product_recall_at_k] if both else []),
                                    s.product_hit_at_1, s.product_map_at_k,
                                    s.category_precision_at_k))]
        if supplier is not None:
            line += [_num(s.supplier_hit_at_1), _num(s.supplier_hit_at_5)]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
