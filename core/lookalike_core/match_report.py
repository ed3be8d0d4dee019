"""The supplier matching report (CSV or JSON Lines): its rows and columns, the verdict rule,
a writer that flushes a line at a time and resumes, and the reader (review page, exports).

A file format, like the build manifest: pure Python in the core, so the server's matching
service and the light client write the same report, and the selectors read it (from any
storage, through a text stream) without importing the service.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _csv import Writer as CsvWriter

SAME = "same"  # this is article X: verified (or a near-identical photo, unverified)
SIMILAR = "similar"  # alike, not verified: a buyer looks at it
NEW = "new"  # nothing close: not sold here
ERROR = "error"
VERDICTS = (SAME, SIMILAR, NEW, ERROR)
LEGACY_VERDICTS = {"duplicate": SAME}  # reports written before verdicts were renamed
REPORT_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FREE_FORM_EXTRA = "extra"  # CSV column holding a JSON Lines source's extra fields as JSON

MSG_REPORT_FORMAT = "{path}: the report must end in .csv, .jsonl or .ndjson"
MSG_REPORT_HEADER = (
    "{path} already holds a report with other columns ({found}); expected ({expected}). "
    "Resume with the same --k and source, or choose another --output"
)


def verdict_for(best_distance: float | None, *, same_threshold: float,
                similar_threshold: float) -> str:
    """The verdict of a photo whose nearest article is at ``best_distance`` (None: none):
    ``same`` at or under ``same_threshold``, ``similar`` at or under ``similar_threshold``,
    else ``new``."""
    if best_distance is not None and best_distance <= same_threshold:
        return SAME
    if best_distance is not None and best_distance <= similar_threshold:
        return SIMILAR
    return NEW


class ReportError(ValueError):
    """The report file cannot be used: another format, or other columns than this run's."""


@dataclass(frozen=True)
class Evidence:
    """What local-feature verification found for one candidate: geometrically consistent
    matches (``inliers``) and their share of the ratio-test matches (``inlier_ratio``)."""

    inliers: int
    inlier_ratio: float


@dataclass(frozen=True)
class Candidate:
    """One ranked article of a row with its evidence (None: not verified)."""

    article_id: str
    distance: float  # the global embedding distance
    evidence: Evidence | None = None

    @property
    def inliers(self) -> int | None:
        return None if self.evidence is None else self.evidence.inliers

    @property
    def inlier_ratio(self) -> float | None:
        return None if self.evidence is None else self.evidence.inlier_ratio


@dataclass(frozen=True)
class MatchRow:
    """One line of the report: a supplier photo, its verdict and its ranked articles.

    ``matches`` are (article_id, global distance) pairs in the final order (verified
    candidates first when verification ran); ``evidence`` is aligned with them (None for a
    candidate that was not verified). ``candidates`` zips both.
    """

    supplier_ref: str
    verdict: str
    matches: list[tuple[str, float]] = field(default_factory=list)  # (article_id, distance)
    error: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    evidence: list[Evidence | None] = field(default_factory=list)

    @property
    def candidates(self) -> list[Candidate]:
        return [
            Candidate(article_id, distance,
                      self.evidence[rank] if rank < len(self.evidence) else None)
            for rank, (article_id, distance) in enumerate(self.matches)
        ]


RANK_COLUMNS = ("match", "distance", "inliers", "inlier_ratio")  # per rank: match_1, ...


def report_columns(*, k: int, extra_columns: list[str] | None) -> list[str]:
    """The CSV header: ref, verdict, k (match, distance, inliers, inlier ratio) groups,
    error, then the extras."""
    ranked = [f"{name}_{rank}" for rank in range(1, k + 1) for name in RANK_COLUMNS]
    extras = [FREE_FORM_EXTRA] if extra_columns is None else _safe_extras(extra_columns)
    return ["supplier_ref", "verdict", *ranked, "error", *extras]


def _safe_extras(extra_columns: list[str]) -> list[str]:
    """Source columns named like a report column get a ``source_`` prefix."""
    taken = {"supplier_ref", "verdict", "error"}
    prefixes = tuple(f"{name}_" for name in RANK_COLUMNS)
    return [name if name not in taken and not name.startswith(prefixes)
            else f"source_{name}" for name in extra_columns]


def report_csv_values(
    row: MatchRow, *, k: int, extra_columns: list[str] | None
) -> list[str]:
    """The CSV cells of ``row`` under ``report_columns(k=k, extra_columns=...)``."""
    ranked: list[str] = []
    for rank in range(k):
        if rank < len(row.matches):
            candidate = row.candidates[rank]
            evidence = candidate.evidence
            ranked += [candidate.article_id, f"{candidate.distance:.6f}",
                       "" if evidence is None else str(evidence.inliers),
                       "" if evidence is None else f"{evidence.inlier_ratio:.4f}"]
        else:
            ranked += ["", "", "", ""]
    if extra_columns is None:
        extras = [json.dumps(row.extra, ensure_ascii=False) if row.extra else ""]
    else:
        extras = [row.extra.get(name, "") for name in extra_columns]
    values = [row.supplier_ref, row.verdict, *ranked, row.error, *extras]
    return [_one_line(value) for value in values]


def _one_line(text: str) -> str:
    """CSV cells on one line, so every report row is one line (what resuming reads)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def report_format(path: Path) -> str:
    kind = REPORT_EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise ReportError(MSG_REPORT_FORMAT.format(path=path))
    return kind


class ReportWriter:
    """Appends rows to the report, one flushed line each (a killed run loses no written row).

    Opening an existing report keeps its finished rows (their refs are in ``done``, so a
    re-run skips them) and drops its error rows and any half-written last line, which are
    matched again: the kept rows are copied to a temp file that replaces the report.
    """

    def __init__(self, *, path: Path, k: int, extra_columns: list[str] | None) -> None:
        self.path = path
        self.kind = report_format(path)
        self.k = k
        self.extra_columns = extra_columns
        self.columns = report_columns(k=k, extra_columns=extra_columns)
        self.done: set[str] = set()
        self.kept = 0
        self._handle: IO[str] | None = None
        self._csv: CsvWriter | None = None

    def __enter__(self) -> ReportWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self._resume()
        else:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self._start()
            if self._csv is not None:
                self._csv.writerow(self.columns)
                self._handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _start(self) -> None:
        if self.kind == "csv" and self._handle is not None:
            self._csv = csv.writer(self._handle, lineterminator="\n")

    def write(self, row: MatchRow) -> None:
        assert self._handle is not None, "the report is not open"
        if self._csv is not None:
            self._csv.writerow(report_csv_values(row, k=self.k,
                                                 extra_columns=self.extra_columns))
        else:
            self._handle.write(json.dumps(_json_values(row), ensure_ascii=False) + "\n")
        self._handle.flush()
        self.done.add(row.supplier_ref)

    def _resume(self) -> None:
        """Keep the finished rows of the existing report; drop errors and a torn last line."""
        kept_lines, dropped = self._finished_lines()
        if dropped:
            temp = self.path.with_name(f".{self.path.name}.resume.tmp")
            with temp.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(kept_lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        self._handle = self.path.open("a", encoding="utf-8", newline="")
        self._start()

    def _finished_lines(self) -> tuple[list[str], int]:
        kept: list[str] = []
        dropped = 0
        for text, ref, verdict in self._read_lines():
            if ref is None or _verdict(verdict or "") not in VERDICTS or verdict == ERROR:
                dropped += 1
                continue
            if ref != "":
                self.done.add(ref)
                self.kept += 1
            kept.append(text)
        return kept, dropped

    def _read_lines(self) -> Iterator[tuple[str, str | None, str | None]]:
        """(raw line, ref, verdict) per line; ref None for a line that does not parse.

        The header comes back with ref "" and verdict "new" so it is kept as is.
        """
        with self.path.open("r", encoding="utf-8", newline="") as handle:
            lines = handle.readlines()
        if lines and not lines[-1].endswith("\n"):
            lines[-1] = lines[-1] + "\x00"  # torn by a kill mid-write: never parses
        if self.kind == "jsonl":
            for text in lines:
                try:
                    values = json.loads(text)
                except ValueError:
                    yield text, None, None
                    continue
                ok = isinstance(values, dict) and isinstance(values.get("supplier_ref"), str)
                yield (text, values["supplier_ref"], values.get("verdict")) if ok else (
                    text, None, None)
            return
        header = next(csv.reader([lines[0]])) if lines else []
        if header != self.columns:
            raise ReportError(MSG_REPORT_HEADER.format(
                path=self.path, found=", ".join(header), expected=", ".join(self.columns)))
        yield lines[0], "", NEW
        for text in lines[1:]:
            values = next(csv.reader([text]), [])
            if "\x00" in text or len(values) != len(self.columns):
                yield text, None, None
            else:
                yield text, values[0], values[1]


def _json_values(row: MatchRow) -> dict[str, Any]:
    values: dict[str, Any] = {
        "supplier_ref": row.supplier_ref,
        "verdict": row.verdict,
        "matches": [{"article_id": c.article_id, "distance": round(c.distance, 6),
                     "inliers": c.inliers,
                     "inlier_ratio": None if c.inlier_ratio is None else round(c.inlier_ratio, 4)}
                    for c in row.candidates],
        "error": row.error,
    }
    if row.extra:
        values["extra"] = row.extra
    return values


def report_rows_read(*, path: Path) -> Iterator[MatchRow]:
    """The rows of a finished CSV or JSON Lines report file."""
    kind = report_format(path)
    with path.open("r", encoding="utf-8", newline="") as handle:
        yield from report_rows(handle, kind=kind)


def report_rows(handle: IO[str], *, kind: str) -> Iterator[MatchRow]:
    """The rows of a report read from ``handle`` (``kind``: csv or jsonl)."""
    if kind == "jsonl":
        for text in handle:
            values = json.loads(text)
            found = values["matches"]
            yield MatchRow(
                supplier_ref=values["supplier_ref"], verdict=_verdict(values["verdict"]),
                matches=[(m["article_id"], float(m["distance"])) for m in found],
                evidence=[_evidence(m.get("inliers"), m.get("inlier_ratio")) for m in found],
                error=values.get("error", ""), extra=values.get("extra", {}),
            )
        return
    reader = csv.reader(handle)
    header = next(reader, [])
    ranks = sum(1 for name in header if name.startswith("match_"))
    extra_names = header[header.index("error") + 1:] if "error" in header else []
    for values in reader:
        record = dict(zip(header, values, strict=False))
        present = [rank for rank in range(1, ranks + 1) if record.get(f"match_{rank}")]
        yield MatchRow(
            supplier_ref=record["supplier_ref"], verdict=_verdict(record["verdict"]),
            matches=[(record[f"match_{rank}"], float(record[f"distance_{rank}"]))
                     for rank in present],
            evidence=[_evidence(record.get(f"inliers_{rank}"),
                                record.get(f"inlier_ratio_{rank}")) for rank in present],
            error=record.get("error", ""),
            extra={name: record.get(name, "") for name in extra_names},
        )


def _verdict(value: str) -> str:
    return LEGACY_VERDICTS.get(value, value)


def _evidence(inliers: object, ratio: object) -> Evidence | None:
    """Evidence from a report's cells; None when the candidate was not verified (empty
    cells, or a report written before verification)."""
    if inliers in (None, "") or ratio in (None, ""):
        return None
    return Evidence(inliers=int(str(inliers)), inlier_ratio=float(str(ratio)))
