"""Supplier match runs (reads): a run's report rows, its CSV export, its thumbnails, all read
from the run's folder in the private "matching" storage; the buyers' decisions on its photos."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.files import File
from django.db.models import Count, Q, QuerySet
from lookalike_core.match_report import (
    SAME,
    VERDICTS,
    MatchRow,
    report_columns,
    report_csv_values,
    report_rows,
)

from similarity.models import MatchDecision, MatchRun
from similarity.storages import match_thumbnail_key, match_thumbnail_name, matching_storage

MSG_BAD_VERDICT = "verdict must be one of {choices}; got {value!r}"
MSG_BAD_DECISION_FILTER = "decision must be one of {choices}; got {value!r}"
UNDECIDED = "undecided"
DECISION_FILTERS = (*MatchDecision.Decision.values, UNDECIDED)
REVIEW_COLUMNS = ("review_decision", "review_article_id", "reviewed_by", "reviewed_at")
# A cell starting with one of these runs as a formula when the export is opened in a
# spreadsheet; supplier refs, errors and feed columns come from outside (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@contextmanager
def _report_text(run: MatchRun) -> Iterator[io.TextIOWrapper | None]:
    """The run's published report as text, None before the first publish."""
    if not run.report_file:
        yield None
        return
    storage = matching_storage()
    name = f"{run.folder}/{run.report_file}"
    if not storage.exists(name):
        yield None
        return
    with storage.open(name, "rb") as handle:
        yield io.TextIOWrapper(handle, encoding="utf-8", newline="")


def match_run_rows(
    *, run: MatchRun, verdict: str | None = None, decision: str | None = None
) -> Iterator[MatchRow]:
    """The report's rows, optionally of one verdict and of one review decision (or
    ``undecided``); nothing before a report is published."""
    if verdict not in (None, "", *VERDICTS):
        raise ValueError(MSG_BAD_VERDICT.format(choices=", ".join(VERDICTS), value=verdict))
    if decision not in (None, "", *DECISION_FILTERS):
        raise ValueError(MSG_BAD_DECISION_FILTER.format(choices=", ".join(DECISION_FILTERS),
                                                        value=decision))
    decided = match_run_decisions(run=run) if decision else {}
    with _report_text(run) as text:
        if text is None:
            return
        for row in report_rows(text, kind="csv"):
            if verdict and row.verdict != verdict:
                continue
            if decision:
                made = decided.get(row.supplier_ref)
                if (made.decision if made else UNDECIDED) != decision:
                    continue
            yield row


def match_run_row(*, run: MatchRun, supplier_ref: str) -> MatchRow | None:
    """The report's row of ``supplier_ref``, None when the published report has none."""
    return next((row for row in match_run_rows(run=run) if row.supplier_ref == supplier_ref),
                None)


def match_run_decisions(
    *, run: MatchRun, supplier_refs: list[str] | None = None
) -> dict[str, MatchDecision]:
    """The run's decisions by supplier_ref (only those of ``supplier_refs`` when given)."""
    decisions = MatchDecision.objects.filter(run=run)
    if supplier_refs is not None:
        decisions = decisions.filter(supplier_ref__in=supplier_refs)
    return {decision.supplier_ref: decision for decision in decisions}


def match_run_decision_counts(*, run: MatchRun) -> dict[str, int]:
    """How many photos of the run are confirmed, new, skipped, and still undecided."""
    counts = dict.fromkeys(DECISION_FILTERS, 0)
    for row in MatchDecision.objects.filter(run=run).values("decision").annotate(n=Count("pk")):
        counts[row["decision"]] = row["n"]
    decided = sum(counts[name] for name in MatchDecision.Decision.values)
    counts[UNDECIDED] = max(0, run.total_count - decided)
    return counts


def match_runs_with_decision_counts(queryset: QuerySet[MatchRun]) -> QuerySet[MatchRun]:
    """``queryset`` with ``confirmed_count``, ``marked_new_count`` and ``skipped_count``."""
    choice = MatchDecision.Decision
    return queryset.annotate(
        confirmed_count=Count("decisions", filter=Q(decisions__decision=choice.CONFIRMED)),
        marked_new_count=Count("decisions", filter=Q(decisions__decision=choice.NEW)),
        skipped_count=Count("decisions", filter=Q(decisions__decision=choice.SKIPPED)),
    )


def match_run_same_pending(*, run: MatchRun) -> tuple[list[tuple[str, str]], int]:
    """The undecided ``same`` photos of ``run`` as (supplier_ref, first match's article id),
    and how many ``same`` photos are already decided (they are left as they are)."""
    decided = match_run_decisions(run=run)
    pending: list[tuple[str, str]] = []
    already = 0
    for row in match_run_rows(run=run, verdict=SAME):
        if row.supplier_ref in decided:
            already += 1
        elif row.matches:
            pending.append((row.supplier_ref, row.matches[0][0]))
    return pending, already


def match_run_csv(
    *, run: MatchRun, verdict: str | None = None, decision: str | None = None
) -> Iterator[str]:
    """The report (or its rows of one verdict, one decision) as CSV text, a line at a time,
    each row followed by its review decision (REVIEW_COLUMNS; empty when undecided)."""
    with _report_text(run) as text:
        if text is None:
            return
        header = next(csv.reader(text), [])
    extras = header[header.index("error") + 1:] if "error" in header else []
    decided = match_run_decisions(run=run)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([_spreadsheet_safe(name) for name in (  # the feed names extra columns
        *report_columns(k=run.k, extra_columns=extras), *REVIEW_COLUMNS)])
    for row in match_run_rows(run=run, verdict=verdict, decision=decision):
        made = decided.get(row.supplier_ref)
        review = ([made.decision, made.article_id, made.decided_by, made.decided_at.isoformat()]
                  if made else ["", "", "", ""])
        writer.writerow([_spreadsheet_safe(value) for value in (
            *report_csv_values(row, k=run.k, extra_columns=extras), *review)])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def _spreadsheet_safe(value: str) -> str:
    """``value`` as a spreadsheet shows it, never as a formula: a leading quote when it
    starts like one (numbers, such as negative ones, are left as they are)."""
    if not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return f"'{value}"
    return value


def match_run_thumbnail_name(*, run: MatchRun, supplier_ref: str) -> str:
    """The name of a supplier photo's thumbnail in ``run`` (what the thumbnail view serves)."""
    return match_thumbnail_name(folder=run.folder, supplier_ref=supplier_ref)


def match_run_thumbnail_open(*, run: MatchRun, name: str) -> File:
    """Thumbnail ``name`` of ``run``, opened; FileNotFoundError when it does not exist (or
    ``name`` is not a thumbnail name: nothing else of the folder is served through it)."""
    try:
        key = match_thumbnail_key(folder=run.folder, name=name)
    except ValueError as exc:
        raise FileNotFoundError(name) from exc
    storage = matching_storage()
    if not run.folder or not storage.exists(key):
        raise FileNotFoundError(name)
    return storage.open(key, "rb")
