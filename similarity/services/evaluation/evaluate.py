"""Index quality: self-retrieval, approximate recall, labelled retrieval, duplicate detector."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from catalog.selectors import article_ids_by_pk
from similarity.conf import similarity_settings
from similarity.engine.index import (
    connected_components,
    knn_query,
    range_search_batched,
    recall_at_k,
)
from similarity.errors import IndexNotReady
from similarity.selectors.store import get_store
from similarity.selectors.validation import validate_k
from similarity.services.evaluation.labelled import (
    Labels,
    RetrievalScores,
    format_scores_table,
    labels_read,
    retrieval_scores,
)
from similarity.services.indexing.update import EXACT_FACTORIES, collect_inputs

TIE_EPSILON = 1e-4  # distances at or below count as "identical" (exact duplicates tie at 0)
SWEEP = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
BATCH = 1024
MAX_FAILURES_LISTED = 50


@dataclass
class DetectorScore:
    threshold: float
    predicted_pairs: int
    true_pairs: int
    correct_pairs: int
    precision: float
    recall: float
    group_precision: float  # pairs within one connected component
    group_recall: float


@dataclass
class EvaluationReport:
    build_name: str
    model: str
    factory: str
    count: int
    k: int
    self_first: int = 0
    self_tied: int = 0  # self not first but inside the set tied at distance ~0
    self_failures: list[dict[str, Any]] = field(default_factory=list)
    approximate_recall: float | None = None
    approximate_sample: int = 0
    labelled_queries: int = 0
    labels_ignored: int = 0  # article ids in the labels that are not in the index
    recall_at_k: float | None = None
    precision_at_k: float | None = None
    map_at_k: float | None = None
    detector: DetectorScore | None = None
    sweep: list[DetectorScore] = field(default_factory=list)
    retrieval: RetrievalScores | None = None  # product/category/supplier scores (labels)

    @property
    def self_failure_count(self) -> int:
        return self.count - self.self_first - self.self_tied

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "self_failure_count": self.self_failure_count}


def read_labels(path: Path | str) -> dict[str, str]:
    """article_id -> product (or the old ``group`` column) from a labels CSV; ValueError."""
    return labels_read(path=path).product


def index_evaluate(
    *,
    k: int = 10,
    labels: dict[str, str] | Labels | None = None,
    threshold: float | None = None,
    sample: int | None = None,
    progress: bool = True,
    query_kind: str | None = None,
    catalog_kind: str | None = None,
) -> EvaluationReport:
    """Evaluate the current index (see EvaluationReport); vectors come from stored embeddings.

    ``labels``: article_id -> group, or a ``Labels`` table, which also scores same-product,
    same-category and (with ``query_kind`` and ``catalog_kind``) the supplier case.
    """
    k = validate_k(k)
    loaded = get_store().get()
    inputs = collect_inputs(loaded.manifest.model_identity)
    keep = np.isin(inputs.ids, loaded.ids)
    ids, vectors = inputs.ids[keep], inputs.vectors[keep]
    factory = loaded.manifest.factory
    report = EvaluationReport(
        build_name=loaded.name, model=loaded.manifest.model, factory=factory,
        count=len(ids), k=k,
    )
    names = article_ids_by_pk(pks=ids.tolist())
    _self_retrieval(report, loaded.index, ids, vectors, names, k, progress)
    if factory not in EXACT_FACTORIES and len(ids):
        size = min(sample or similarity_settings().recall_sample, len(ids))
        rows = np.sort(np.random.default_rng(0).choice(len(ids), size=size, replace=False))
        report.approximate_recall = recall_at_k(loaded.index, (vectors, ids), vectors[rows], k)
        report.approximate_sample = size
    if labels:
        report.labels_ignored = len(_labelled_ids(labels) - set(names.values()))
    if isinstance(labels, Labels):
        report.retrieval = retrieval_scores(
            names=[names[pk] for pk in ids.tolist()], vectors=vectors, labels=labels, k=k,
            query_kind=query_kind, catalog_kind=catalog_kind,
        )
        labels = labels.product
    if labels:
        if threshold is None:
            threshold = similarity_settings().duplicate_threshold_for(report.model)
        _labelled(report, loaded.index, ids, vectors, names, labels, k, threshold, progress)
    return report


def _labelled_ids(labels: dict[str, str] | Labels) -> set[str]:
    if isinstance(labels, Labels):
        return {*labels.product, *labels.category, *labels.kind}
    return set(labels)


def _self_retrieval(report, index, ids, vectors, names, k, progress) -> None:
    for start in tqdm(range(0, len(ids), BATCH), desc="Self-retrieval", disable=not progress):
        answers = knn_query(index, vectors[start : start + BATCH], k)
        for query_id, answer in zip(ids[start : start + BATCH].tolist(), answers, strict=True):
            found = answer.ids.tolist()
            if found and found[0] == query_id:
                report.self_first += 1
                continue
            tied = answer.distances <= TIE_EPSILON
            position = found.index(query_id) if query_id in found else None
            if (position is not None and tied[: position + 1].all()) or (
                position is None and len(found) == k and tied.all()
            ):
                report.self_tied += 1
            elif len(report.self_failures) < MAX_FAILURES_LISTED:
                report.self_failures.append({
                    "article_id": names.get(query_id, str(query_id)),
                    "first": names.get(found[0], str(found[0])) if found else None,
                    "first_distance": float(answer.distances[0]) if found else None,
                    "self_rank": None if position is None else position + 1,
                })


def _labelled(report, index, ids, vectors, names, labels, k, threshold, progress) -> None:
    group_of = {pk: labels[name] for pk, name in names.items() if name in labels}
    sizes = Counter(group_of.values())
    rows = [row for row, pk in enumerate(ids.tolist()) if sizes.get(group_of.get(pk), 0) > 1]
    recalls, precisions, aps = [], [], []
    for start in tqdm(range(0, len(rows), BATCH), desc="Labelled", disable=not progress):
        chunk = rows[start : start + BATCH]
        answers = knn_query(index, vectors[chunk], k + 1)
        for row, answer in zip(chunk, answers, strict=True):
            query_id = int(ids[row])
            found = [pk for pk in answer.ids.tolist() if pk != query_id][:k]
            relevant = sizes[group_of[query_id]] - 1
            hits = [group_of.get(pk) == group_of[query_id] for pk in found]
            ideal = min(k, relevant)
            recalls.append(sum(hits) / ideal)
            precisions.append(sum(hits) / k)
            precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            aps.append(float(sum(p for p, h in zip(precision_at, hits, strict=True) if h)) / ideal)
    report.labelled_queries = len(rows)
    if rows:
        report.recall_at_k = float(np.mean(recalls))
        report.precision_at_k = float(np.mean(precisions))
        report.map_at_k = float(np.mean(aps))
    # Pairs up to the widest threshold once; every threshold of the sweep is a filter of them.
    widest = max((*SWEEP, threshold))
    pairs = [
        (a, b, d) for a, b, d in range_search_batched(index, vectors, ids, widest)
        if a in group_of and b in group_of
    ]
    true_pairs = sum(n * (n - 1) // 2 for n in sizes.values())
    for value in sorted({*SWEEP, threshold}):
        score = _detector(pairs, group_of, true_pairs, value)
        report.sweep.append(score)
        if value == threshold:
            report.detector = score


def _detector(pairs, group_of, true_pairs, threshold) -> DetectorScore:
    predicted = [(a, b) for a, b, d in pairs if d < threshold]
    correct = sum(group_of[a] == group_of[b] for a, b in predicted)
    grouped = correct_grouped = 0
    for component in connected_components(predicted):
        counts = Counter(group_of[pk] for pk in component)
        grouped += len(component) * (len(component) - 1) // 2
        correct_grouped += sum(n * (n - 1) // 2 for n in counts.values())
    return DetectorScore(
        threshold=threshold,
        predicted_pairs=len(predicted),
        true_pairs=true_pairs,
        correct_pairs=correct,
        precision=correct / len(predicted) if predicted else 1.0,
        recall=correct / true_pairs if true_pairs else 1.0,
        group_precision=correct_grouped / grouped if grouped else 1.0,
        group_recall=correct_grouped / true_pairs if true_pairs else 1.0,
    )


def format_report(report: EvaluationReport) -> str:
    """A plain-text table of the report."""
    lines = [
        f"Index {report.build_name} ({report.model}, {report.factory}): {report.count} articles",
        f"Self-retrieval: {report.self_first} first, {report.self_tied} tied at distance 0, "
        f"{report.self_failure_count} failures",
    ]
    lines += [
        f"  FAIL {f['article_id']}: first {f['first']} at {f['first_distance']}, "
        f"self rank {f['self_rank']}"
        for f in report.self_failures[:10]
    ]
    if report.approximate_recall is not None:
        lines.append(f"Approximate recall@{report.k} vs exact "
                     f"(sample {report.approximate_sample}): {report.approximate_recall:.4f}")
    if report.labels_ignored:
        lines.append(f"Labels: {report.labels_ignored} article id(s) not in the index, ignored")
    if report.recall_at_k is not None:
        lines.append(
            f"Labelled ({report.labelled_queries} queries): recall@{report.k} "
            f"{report.recall_at_k:.4f}, precision@{report.k} {report.precision_at_k:.4f}, "
            f"mAP@{report.k} {report.map_at_k:.4f}"
        )
    if report.retrieval is not None:
        lines.append("Labelled retrieval (exact cosine kNN over stored vectors):")
        lines += ["  " + line for line in
                  format_scores_table([(report.model, report.retrieval)]).splitlines()]
    if report.sweep:
        lines.append("Duplicate detector (pairs; groups = same connected component):")
        lines.append("  threshold  predicted  correct   true  precision  recall  "
                     "group-prec  group-recall")
        for s in report.sweep:
            mark = " <- current" if report.detector is s else ""
            lines.append(
                f"  {s.threshold:9.3f}  {s.predicted_pairs:9d}  {s.correct_pairs:7d}  "
                f"{s.true_pairs:5d}  {s.precision:9.3f}  {s.recall:6.3f}  "
                f"{s.group_precision:10.3f}  {s.group_recall:12.3f}{mark}"
            )
    return "\n".join(lines)


def models_evaluate(
    *,
    models: list[str],
    labels: Labels,
    k: int = 10,
    query_kind: str | None = None,
    catalog_kind: str | None = None,
    progress: bool = True,
) -> list[EvaluationReport]:
    """Build the index with each of ``models`` in turn and evaluate it; one report per model.

    Each build embeds only what that model has not stored yet. Afterwards the index the
    catalog was serving before (if any) is built again from its stored vectors, so the
    current model is what it was.
    """
    from similarity.services.builds.runs import index_build_run

    if not models:
        raise ValueError("models must name at least one model")
    try:
        previous = get_store().get().manifest["model"]
    except IndexNotReady:  # no current index: nothing to restore
        previous = None
    reports = []
    for model in models:
        index_build_run(model=model, progress=progress, trigger="evaluate")
        reports.append(index_evaluate(k=k, labels=labels, progress=progress,
                                      query_kind=query_kind, catalog_kind=catalog_kind))
    if previous is not None and previous != models[-1]:
        index_build_run(model=previous, progress=progress, trigger="evaluate")
    return reports


def format_models_table(reports: list[EvaluationReport]) -> str:
    """One row per model: the labelled retrieval scores side by side."""
    table = format_scores_table([(r.model, r.retrieval) for r in reports if r.retrieval])
    ignored = max((r.labels_ignored for r in reports), default=0)
    if ignored:
        table += f"\nLabels: {ignored} article id(s) not in the index, ignored"
    return table
