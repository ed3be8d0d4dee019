"""The match report format: evidence columns round-trip, old reports still read."""

import io

from lookalike_core.match_report import (
    SAME,
    Evidence,
    MatchRow,
    ReportWriter,
    report_rows,
    report_rows_read,
)


def test_evidence_round_trips_through_csv_and_jsonl(tmp_path):
    row = MatchRow(supplier_ref="p1", verdict=SAME, matches=[("A1", 0.4), ("A2", 0.5)],
                   evidence=[Evidence(inliers=42, inlier_ratio=0.5), None])
    for name in ("r.csv", "r.jsonl"):
        with ReportWriter(path=tmp_path / name, k=3, extra_columns=None) as writer:
            writer.write(row)
        (back,) = report_rows_read(path=tmp_path / name)
        assert back.verdict == SAME and back.matches == row.matches
        assert [c.inliers for c in back.candidates] == [42, None]
        assert back.candidates[0].inlier_ratio == 0.5


def test_reports_written_before_the_rename_read_duplicate_as_same():
    old_csv = ("supplier_ref,verdict,match_1,distance_1,error,extra\n"
               "p1,duplicate,A1,0.010000,,\n")
    (row,) = report_rows(io.StringIO(old_csv), kind="csv")
    assert row.verdict == SAME and row.candidates[0].evidence is None
    old_jsonl = '{"supplier_ref": "p1", "verdict": "duplicate", "matches": [], "error": ""}\n'
    (row,) = report_rows(io.StringIO(old_jsonl), kind="jsonl")
    assert row.verdict == SAME
