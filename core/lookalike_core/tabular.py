"""Tabular feeds: the one reader of CSV and JSON Lines files, a record per line.

The catalog import and the supplier feeds of matching read through it, so both accept the
same extensions, encodings, dialects and limits, and describe a bad line the same way. A
line that cannot be read is yielded as its reason (the caller skips it and goes on); a file
that cannot be read at all raises ``TabularError``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CSV = "csv"
JSONL = "jsonl"
# .tsv / .txt: Google Merchant Center's tab-separated feeds (the dialect is sniffed).
EXTENSIONS = {".csv": CSV, ".tsv": CSV, ".txt": CSV, ".jsonl": JSONL, ".ndjson": JSONL}
CSV_FIELD_LIMIT = 10 * 1024 * 1024  # characters; the csv module's default is 128 KiB
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"

MSG_NO_FILE = "{path}: no such file"
MSG_NOT_FILE = "{path}: not a file"
MSG_FORMAT = (
    "{path}: unknown format {suffix!r}; use .csv (.tsv, .txt) or .jsonl / .ndjson (JSON Lines)"
)
MSG_JSON_DOCUMENT = (
    "{path}: a .json file holds one JSON document; feeds are JSON Lines (one object per "
    "line): name the file .jsonl or .ndjson"
)
MSG_NOT_UTF8 = "{path}: not UTF-8 (or UTF-16 with a byte order mark) text ({reason})"
MSG_HEADER_UNREADABLE = "{path}: unreadable CSV header: {error}"
MSG_HEADER = "{path}: CSV header must contain {required}; missing {missing} (header: {header})"
MSG_CSV_LINE = "{path}: line {line}: unreadable CSV: {error}"
MSG_FIELD_TOO_LARGE = "a field is longer than {limit} characters"
MSG_BAD_JSON = "invalid JSON: {error}"
MSG_NON_FINITE = "invalid JSON: NaN/Infinity are not allowed"
MSG_NOT_OBJECT = "expected a JSON object, got {kind}"

Record = dict[str, Any] | str  # the line's values, or why the line cannot be read


class TabularError(Exception):
    """The file as a whole cannot be read (missing, wrong format, not UTF-8, bad header)."""


def tabular_kind(path: Path) -> str | None:
    """``csv`` or ``jsonl`` by the file's extension; None for any other."""
    return EXTENSIONS.get(path.suffix.lower())


@dataclass(frozen=True)
class TabularFile:
    """An opened feed: its kind and (CSV) its header; records are read lazily."""

    path: Path
    kind: str  # CSV or JSONL
    columns: list[str] | None  # the CSV header, names stripped; None for JSON Lines

    def records(self) -> Iterator[tuple[int, Record]]:
        """(line number, values or the reason the line is unreadable), in file order."""
        try:
            if self.kind == CSV:
                yield from _csv_records(self.path)
            else:
                yield from _jsonl_records(self.path)
        except UnicodeDecodeError as exc:
            raise TabularError(MSG_NOT_UTF8.format(path=self.path, reason=exc.reason)) from exc


def tabular_open(path: Path | str, *, required: Sequence[str] = ()) -> TabularFile:
    """The feed at ``path``; TabularError when it is missing, of another format, not UTF-8, or
    (CSV) its header lacks one of the ``required`` columns."""
    path = Path(path)
    if not path.exists():
        raise TabularError(MSG_NO_FILE.format(path=path))
    if not path.is_file():
        raise TabularError(MSG_NOT_FILE.format(path=path))
    kind = tabular_kind(path)
    if kind is None:
        suffix = path.suffix.lower()
        message = MSG_JSON_DOCUMENT if suffix == ".json" else MSG_FORMAT
        raise TabularError(message.format(path=path, suffix=suffix or "(no extension)"))
    if kind == JSONL:
        return TabularFile(path=path, kind=kind, columns=None)
    try:
        columns = _csv_header(path)
    except UnicodeDecodeError as exc:
        raise TabularError(MSG_NOT_UTF8.format(path=path, reason=exc.reason)) from exc
    missing = [column for column in required if column not in columns]
    if missing:
        raise TabularError(MSG_HEADER.format(
            path=path, required=", ".join(required), missing=", ".join(missing),
            header=", ".join(columns) or "empty",
        ))
    return TabularFile(path=path, kind=kind, columns=columns)


def _csv_reader(handle: IO[str]) -> csv.DictReader[str]:
    """A DictReader in the file's dialect (sniffed from its start; Excel's otherwise)."""
    sample = handle.read(SNIFF_BYTES)
    handle.seek(0)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            sample, delimiters=DELIMITERS
        )
    except csv.Error:
        dialect = csv.excel
    return csv.DictReader(handle, dialect=dialect)


def text_encoding(path: Path) -> str:
    """UTF-16 when the file starts with its byte order mark (spreadsheet exports), else UTF-8
    (a UTF-8 byte order mark is skipped)."""
    with path.open("rb") as handle:
        start = handle.read(2)
    return "utf-16" if start in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"


def _csv_header(path: Path) -> list[str]:
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide: for this read only
    try:
        with path.open("r", encoding=text_encoding(path), newline="") as handle:
            try:
                fieldnames = _csv_reader(handle).fieldnames
            except csv.Error as exc:
                raise TabularError(MSG_HEADER_UNREADABLE.format(path=path, error=exc)) from exc
    finally:
        csv.field_size_limit(previous_limit)
    return [name.strip() for name in (fieldnames or [])]


def _csv_records(path: Path) -> Iterator[tuple[int, Record]]:
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with path.open("r", encoding=text_encoding(path), newline="") as handle:
            reader = _csv_reader(handle)
            reader.fieldnames = [name.strip() for name in (reader.fieldnames or [])]
            yield from _csv_rows(path, reader)
    finally:
        csv.field_size_limit(previous_limit)


def _csv_rows(path: Path, reader: csv.DictReader[str]) -> Iterator[tuple[int, Record]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # DictReader updates its line_num only after a good row; its reader's is current.
            line = reader.reader.line_num
            # The reader drops the rest of the line and goes on with the next one.
            if "field larger than field limit" in str(exc):
                yield line, MSG_FIELD_TOO_LARGE.format(limit=CSV_FIELD_LIMIT)
                continue
            raise TabularError(MSG_CSV_LINE.format(path=path, line=line, error=exc)) from exc
        # DictReader counts physical lines; line_num is the last line of this record.
        yield reader.line_num, {k: v for k, v in row.items() if k is not None}


class _NonFiniteNumber(ValueError):
    """NaN, Infinity or an overflowing number: fine for Python, not for JSON in a database."""


def _reject_constant(name: str) -> float:
    raise _NonFiniteNumber(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NonFiniteNumber(text)
    return value


def _jsonl_records(path: Path) -> Iterator[tuple[int, Record]]:
    with path.open("r", encoding=text_encoding(path)) as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield line_no, _json_record(line)


def _json_record(line: str) -> Record:
    try:
        record = json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return MSG_BAD_JSON.format(error=f"{exc.msg} at column {exc.colno}")
    except _NonFiniteNumber:
        return MSG_NON_FINITE
    except (ValueError, RecursionError) as exc:  # a 5000-digit integer, deep nesting
        return MSG_BAD_JSON.format(error=exc)
    if not isinstance(record, dict):
        return MSG_NOT_OBJECT.format(kind=type(record).__name__)
    return record
