"""One tabular reader: the catalog import and supplier feeds read CSV / JSON Lines alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from lookalike_core.sources import MatchSourceError, supplier_source_open
from lookalike_core.tabular import (
    MSG_NON_FINITE,
    MSG_NOT_OBJECT,
    TabularError,
    tabular_kind,
    tabular_open,
)

from catalog.services.imports import CatalogImportError, catalog_import

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.csv", "csv"), ("a.CSV", "csv"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"),
     ("a.json", None), ("a.xml", None), ("a", None)],
)
def test_kinds_by_extension(name, kind):
    assert tabular_kind(Path(name)) == kind


def test_a_json_document_is_refused_alike_by_both_readers(tmp_path):
    """A .json file is one JSON document, not JSON Lines: both say so and name the fix."""
    feed = tmp_path / "feed.json"
    feed.write_text('[{"article_id": "A", "supplier_ref": "A", "image_url": "http://x/a.jpg"}]\n')

    with pytest.raises(CatalogImportError, match=r"name the file \.jsonl or \.ndjson") as imported:
        catalog_import(path=feed)
    with pytest.raises(MatchSourceError, match=r"name the file \.jsonl or \.ndjson") as matched:
        supplier_source_open(path=feed)
    assert str(imported.value) == str(matched.value)


def test_bad_lines_read_the_same_in_both(tmp_path):
    """Non-finite numbers, non-objects and broken JSON: the same reason on the same line."""
    feed = tmp_path / "feed.jsonl"
    lines = [
        '{"article_id": "A1", "supplier_ref": "A1", "image_url": "http://x.example/1.jpg"}',
        '{"article_id": "A2", "supplier_ref": "A2", "image_url": "http://x.example/2.jpg", '
        '"weight": NaN}',
        "[1, 2]",
        '{"article_id": ',
    ]
    feed.write_text("\n".join(lines) + "\n")

    skipped = {row.line: row.reason for row in catalog_import(path=feed).skipped}
    errors = {row.line: row.error for row in supplier_source_open(path=feed).rows() if row.error}

    assert skipped == errors
    assert skipped[2] == MSG_NON_FINITE
    assert skipped[3] == MSG_NOT_OBJECT.format(kind="list")
    assert skipped[4].startswith("invalid JSON: ")


def test_csv_header_lacking_a_required_column_names_it(tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text("supplier_ref;title\nR1;x\n")
    with pytest.raises(TabularError, match=r"missing image_url \(header: supplier_ref, title\)"):
        tabular_open(feed, required=("supplier_ref", "image_url"))
    opened = tabular_open(feed, required=("supplier_ref",))
    assert opened.columns == ["supplier_ref", "title"]  # the ; dialect was sniffed
    assert list(opened.records()) == [(2, {"supplier_ref": "R1", "title": "x"})]


def test_not_utf8_is_a_file_error(tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes('{"supplier_ref": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(TabularError, match="not UTF-8"):
        list(tabular_open(feed).records())
    with pytest.raises(MatchSourceError, match="not UTF-8"):
        list(supplier_source_open(path=feed).rows())
