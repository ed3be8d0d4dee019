"""Catalog import: CSV and JSON Lines, idempotent upsert, bad rows reported and skipped."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from lookalike_core import tabular
from lookalike_core.tabular import MSG_FIELD_TOO_LARGE, MSG_NON_FINITE

from catalog.management.commands.import_catalog import EXIT_ROWS_SKIPPED
from catalog.models import MSG_ID_CONTROL, MSG_ID_DOT_SEGMENT, MSG_ID_RESERVED, Article
from catalog.services.imports import (
    MSG_BAD_URL_DETAIL,
    MSG_NUL,
    MSG_SURROGATE,
    CatalogImportError,
    catalog_import,
)

pytestmark = pytest.mark.django_db


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


CSV = """article_id,image_url,title,category,brand
A1,https://cdn.example.com/a1.jpg,Red bag,bags,Acme
A2,https://cdn.example.com/a2.jpg,Blue shoe,shoes,
A3,http://cdn.example.com/a3.png,Lamp,,Lumo
"""


def test_csv_import_creates_articles_with_metadata(tmp_path):
    summary = catalog_import(path=write(tmp_path, "c.csv", CSV))
    assert (summary.created, summary.updated, summary.unchanged) == (3, 0, 0)
    a1 = Article.objects.get(article_id="A1")
    assert a1.title == "Red bag"
    assert a1.category == "bags"
    assert a1.metadata == {"brand": "Acme"}
    assert a1.download_status == Article.DownloadStatus.PENDING
    assert Article.objects.get(article_id="A2").metadata == {}
    assert Article.objects.get(article_id="A3").category == ""


def test_reimport_same_file_changes_nothing(tmp_path):
    path = write(tmp_path, "c.csv", CSV)
    catalog_import(path=path)
    before = {a.article_id: a.updated_at for a in Article.objects.all()}
    summary = catalog_import(path=path)
    assert (summary.created, summary.updated, summary.unchanged) == (0, 0, 3)
    assert {a.article_id: a.updated_at for a in Article.objects.all()} == before


def test_changed_image_url_marks_for_redownload(tmp_path):
    catalog_import(path=write(tmp_path, "c.csv", CSV))
    Article.objects.filter(article_id="A1").update(
        download_status=Article.DownloadStatus.DOWNLOADED,
        image="images/aa/a1.jpg",
        downloaded_url="https://cdn.example.com/a1.jpg",
        download_attempts=1,
    )
    changed = CSV.replace("a1.jpg", "a1-v2.jpg")
    summary = catalog_import(path=write(tmp_path, "c2.csv", changed))
    assert (summary.updated, summary.unchanged, summary.image_changed) == (1, 2, 1)
    a1 = Article.objects.get(article_id="A1")
    assert a1.image_url == "https://cdn.example.com/a1-v2.jpg"
    assert a1.download_status == Article.DownloadStatus.PENDING
    assert a1.image.name == "images/aa/a1.jpg"  # kept until a new download replaces it


def test_title_change_is_an_update_without_redownload(tmp_path):
    catalog_import(path=write(tmp_path, "c.csv", CSV))
    Article.objects.update(download_status=Article.DownloadStatus.DOWNLOADED)
    summary = catalog_import(path=write(tmp_path, "c2.csv", CSV.replace("Red bag", "Red tote")))
    assert (summary.updated, summary.image_changed) == (1, 0)
    a1 = Article.objects.get(article_id="A1")
    assert a1.title == "Red tote"
    assert a1.download_status == Article.DownloadStatus.DOWNLOADED


def test_jsonl_import_keeps_typed_metadata(tmp_path):
    lines = [
        {"article_id": "J1", "image_url": "https://x.example/1.jpg", "title": "One", "price": 9.5},
        {"article_id": 2, "image_url": "https://x.example/2.jpg", "tags": ["a", "b"]},
    ]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    summary = catalog_import(path=path)
    assert summary.created == 2
    assert Article.objects.get(article_id="J1").metadata == {"price": 9.5}
    assert Article.objects.get(article_id="2").metadata == {"tags": ["a", "b"]}


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_import(tmp_path):
    text = (
        "article_id,image_url,title\n"
        "G1,https://x.example/1.jpg,good\n"  # line 2
        ",https://x.example/2.jpg,no id\n"  # line 3
        "B2,,no url\n"  # line 4
        "B3,ftp://x.example/3.jpg,bad scheme\n"  # line 5
        "B4,/relative/4.jpg,relative\n"  # line 6
        "G1,https://x.example/1b.jpg,duplicate\n"  # line 7
        "G2,https://x.example/5.jpg,good\n"  # line 8
    )
    summary = catalog_import(path=write(tmp_path, "c.csv", text))
    assert summary.created == 2
    reasons = {row.line: row.reason for row in summary.skipped}
    assert set(reasons) == {3, 4, 5, 6, 7}
    assert reasons[3] == "missing article_id"
    assert reasons[4] == "missing image_url"
    assert "ftp://x.example/3.jpg" in reasons[5]
    assert "first seen on line 2" in reasons[7]
    assert Article.objects.get(article_id="G1").image_url == "https://x.example/1.jpg"


def test_invalid_json_line_is_skipped(tmp_path):
    text = '{"article_id": "A", "image_url": "https://x.example/a.jpg"}\n{broken\n[1, 2]\n'
    summary = catalog_import(path=write(tmp_path, "c.jsonl", text))
    assert summary.created == 1
    assert [row.line for row in summary.skipped] == [2, 3]
    assert "invalid JSON" in summary.skipped[0].reason


def test_dry_run_writes_nothing(tmp_path):
    summary = catalog_import(path=write(tmp_path, "c.csv", CSV), dry_run=True)
    assert summary.created == 3
    assert Article.objects.count() == 0


def test_deactivate_missing_and_reactivate(tmp_path):
    catalog_import(path=write(tmp_path, "c.csv", CSV))
    only_a1 = "\n".join(CSV.splitlines()[:2]) + "\n"
    summary = catalog_import(path=write(tmp_path, "c2.csv", only_a1), deactivate_missing=True)
    assert summary.deactivated == 2
    assert set(Article.objects.filter(is_active=True).values_list("article_id", flat=True)) == {
        "A1"
    }
    summary = catalog_import(path=write(tmp_path, "c.csv", CSV))
    assert summary.updated == 2
    assert Article.objects.filter(is_active=True).count() == 3


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.csv", "id,url\n1,https://x.example/a.jpg\n", "missing article_id, image_url"),
        ("c.xml", "<catalog/>", "unknown format"),
        ("c.json", '{"article_id": "A1", "image_url": "https://x.example/a.jpg"}\n',
         "name the file .jsonl or .ndjson"),
    ],
)
def test_unusable_files_raise_clear_errors(tmp_path, name, text, message):
    with pytest.raises(CatalogImportError, match=message):
        catalog_import(path=write(tmp_path, name, text))


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(CatalogImportError, match="no such file"):
        catalog_import(path=tmp_path / "nope.csv")
    path = tmp_path / "latin1.csv"
    path.write_bytes("article_id,image_url,title\nA,https://x.example/a.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(CatalogImportError, match="not UTF-8"):
        catalog_import(path=path)


def test_semicolon_csv_is_sniffed(tmp_path):
    text = "article_id;image_url;title\nS1;https://x.example/s.jpg;Semi\n"
    assert catalog_import(path=write(tmp_path, "c.csv", text)).created == 1


def test_command_summary_and_exit_status(tmp_path):
    out = StringIO()
    call_command("import_catalog", str(write(tmp_path, "c.csv", CSV)), stdout=out)
    assert "3 new, 0 updated, 0 unchanged, 0 skipped" in out.getvalue()

    bad = CSV + ",https://x.example/none.jpg,no id\n"
    err = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("import_catalog", str(write(tmp_path, "b.csv", bad)), stdout=out, stderr=err)
    assert excinfo.value.returncode == EXIT_ROWS_SKIPPED
    assert "line 5: skipped: missing article_id" in err.getvalue()
    assert "0 new, 0 updated, 3 unchanged, 1 skipped" in out.getvalue()

    with pytest.raises(CommandError, match="no such file"):
        call_command("import_catalog", str(tmp_path / "missing.csv"))


def test_download_recorded_during_an_import_survives_a_title_change(tmp_path, monkeypatch):
    catalog_import(path=write(tmp_path, "c.csv", CSV))
    read_snapshot = Article.objects.in_bulk

    def snapshot_then_download_lands(*args, **kwargs):
        articles = read_snapshot(*args, **kwargs)
        # The downloader records A1 after the import read its rows, before it writes them.
        Article.objects.filter(article_id="A1").update(
            download_status=Article.DownloadStatus.DOWNLOADED,
            downloaded_url="https://cdn.example.com/a1.jpg",
            image="images/aa/a1.jpg",
            download_attempts=1,
        )
        return articles

    monkeypatch.setattr(Article.objects, "in_bulk", snapshot_then_download_lands)
    summary = catalog_import(path=write(tmp_path, "c2.csv", CSV.replace("Red bag", "Red tote")))

    assert (summary.updated, summary.image_changed) == (1, 0)
    a1 = Article.objects.get(article_id="A1")
    assert a1.title == "Red tote"
    assert (a1.download_status, a1.download_attempts) == (Article.DownloadStatus.DOWNLOADED, 1)


def test_non_finite_json_numbers_are_skipped(tmp_path):
    lines = [
        '{"article_id": "OK", "image_url": "https://x.example/ok.jpg", "price": 1.5}',
        '{"article_id": "N", "image_url": "https://x.example/n.jpg", "price": NaN}',
        '{"article_id": "I", "image_url": "https://x.example/i.jpg", "dims": [-Infinity]}',
        '{"article_id": "O", "image_url": "https://x.example/o.jpg", "price": 1e999}',
    ]
    summary = catalog_import(path=write(tmp_path, "c.jsonl", "\n".join(lines) + "\n"))

    assert summary.created == 1
    assert [(row.line, row.reason) for row in summary.skipped] == [
        (2, MSG_NON_FINITE), (3, MSG_NON_FINITE), (4, MSG_NON_FINITE)
    ]
    assert Article.objects.get().metadata == {"price": 1.5}


def test_nul_characters_are_skipped_anywhere(tmp_path):
    csv_text = (
        "article_id,image_url,title\n"
        "G1,https://x.example/1.jpg,good\n"
        "B1,https://x.example/2.jpg,bad\x00title\n"
    )
    summary = catalog_import(path=write(tmp_path, "c.csv", csv_text))
    assert summary.created == 1
    assert [(row.line, row.reason) for row in summary.skipped] == [
        (3, MSG_NUL.format(field="title"))
    ]

    lines = [
        {"article_id": "J1", "image_url": "https://x.example/j1.jpg", "tags": ["ok"]},
        {"article_id": "J2", "image_url": "https://x.example/j2.jpg", "specs": {"a": ["x\u0000"]}},
        {"article_id": "J3", "image_url": "https://x.example/j3.jpg", "specs": {"k\u0000": 1}},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    summary = catalog_import(path=write(tmp_path, "c.jsonl", text))
    assert summary.created == 1
    assert [(row.line, row.reason) for row in summary.skipped] == [
        (2, MSG_NUL.format(field="specs")), (3, MSG_NUL.format(field="specs"))
    ]
    assert not Article.objects.filter(article_id__in=["B1", "J2", "J3"]).exists()


def test_csv_fields_over_the_default_limit_import(tmp_path):
    notes = "n" * (200 * 1024)  # the csv module's default limit is 128 KiB
    text = f"article_id,image_url,notes\nBIG,https://x.example/b.jpg,{notes}\n"

    assert catalog_import(path=write(tmp_path, "c.csv", text)).created == 1
    assert Article.objects.get().metadata == {"notes": notes}


def test_csv_field_over_the_limit_skips_only_that_row(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "CSV_FIELD_LIMIT", 1000)
    text = (
        "article_id,image_url,notes\n"
        "G1,https://x.example/1.jpg,short\n"
        f"B1,https://x.example/2.jpg,{'n' * 2000}\n"
        "G2,https://x.example/3.jpg,short\n"
    )
    limit_before = csv.field_size_limit()

    summary = catalog_import(path=write(tmp_path, "c.csv", text))

    assert summary.created == 2
    assert [(row.line, row.reason) for row in summary.skipped] == [
        (3, MSG_FIELD_TOO_LARGE.format(limit=1000))
    ]
    assert csv.field_size_limit() == limit_before  # the process-wide limit is restored


def test_unreadable_csv_header_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "CSV_FIELD_LIMIT", 10)
    text = "article_id,image_url,a_very_long_column_name\nA,https://x.example/a.jpg,x\n"

    with pytest.raises(CatalogImportError, match="unreadable CSV header: field larger"):
        catalog_import(path=write(tmp_path, "c.csv", text))


@pytest.mark.parametrize(
    ("article_id", "message"),
    [
        ("line\nbreak", MSG_ID_CONTROL),
        ("tab\there", MSG_ID_CONTROL),
        ("cr\rhere", MSG_ID_CONTROL),
        ("del\x7f", MSG_ID_CONTROL),
        ("c1\x85x", MSG_ID_CONTROL),
        (".", MSG_ID_DOT_SEGMENT),
        ("..", MSG_ID_DOT_SEGMENT),
        ("a/../b", MSG_ID_DOT_SEGMENT),
        ("a/./b", MSG_ID_DOT_SEGMENT),
        ("X1/similar", MSG_ID_RESERVED),
        ("X1/duplicates", MSG_ID_RESERVED),
    ],
)
def test_ids_no_url_can_carry_are_skipped_with_a_reason(tmp_path, article_id, message):
    rows = [
        {"article_id": "GOOD", "image_url": "https://x.example/g.jpg"},
        {"article_id": article_id, "image_url": "https://x.example/b.jpg"},
    ]
    text = "\n".join(json.dumps(row) for row in rows) + "\n"
    path = write(tmp_path, "c.jsonl", text)
    err = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("import_catalog", str(path), stdout=StringIO(), stderr=err)
    assert excinfo.value.returncode == EXIT_ROWS_SKIPPED
    suffix = article_id.rsplit("/", 1)[-1]
    reason = message.format(article_id=article_id, suffix=f"/{suffix}")
    assert f"line 2: skipped: {reason}" in err.getvalue()
    assert list(Article.objects.values_list("article_id", flat=True)) == ["GOOD"]


def test_ids_with_dots_slashes_and_route_names_inside_are_kept(tmp_path):
    ids = ["A-1.b_c", "with/slash", "similar", "a/similar/b", "...", "a..b", "x/similarity"]
    text = "\n".join(
        json.dumps({"article_id": article_id, "image_url": "https://x.example/a.jpg"})
        for article_id in ids
    )
    summary = catalog_import(path=write(tmp_path, "c.jsonl", text + "\n"))
    assert summary.created == len(ids) and not summary.skipped


def test_lone_surrogates_are_skipped_not_a_crash(tmp_path):
    """JSON's "\\ud800" escape parses to a string no database can encode."""
    text = (
        '{"article_id": "OK1", "image_url": "https://x.example/1.jpg",'
        ' "title": "pair \\ud83d\\ude00"}\n'
        '{"article_id": "S1", "image_url": "https://x.example/2.jpg", "title": "sur\\ud800x"}\n'
        '{"article_id": "S2", "image_url": "https://x.example/3.jpg", "tags": {"k\\udfff": 1}}\n'
        '{"article_id": "S3\\udc00", "image_url": "https://x.example/4.jpg"}\n'
        '{"article_id": "OK2", "image_url": "https://x.example/5.jpg"}\n'
    )
    path = write(tmp_path, "c.jsonl", text)
    err = StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("import_catalog", str(path), stdout=StringIO(), stderr=err)
    assert excinfo.value.returncode == EXIT_ROWS_SKIPPED
    for line, field in ((2, "title"), (3, "tags"), (4, "article_id")):
        assert f"line {line}: skipped: {MSG_SURROGATE.format(field=field)}" in err.getvalue()
    assert sorted(Article.objects.values_list("article_id", flat=True)) == ["OK1", "OK2"]
    assert Article.objects.get(article_id="OK1").title == "pair \U0001f600"


def test_csv_with_encoded_surrogates_is_not_utf8(tmp_path):
    """CSV is decoded as strict UTF-8: surrogate bytes make the file unusable, with a message."""
    path = tmp_path / "c.csv"
    path.write_bytes(b"article_id,image_url\nA1,https://x.example/a.jpg\nB\xed\xa0\x80,https://x/b\n")
    with pytest.raises(CatalogImportError, match="not UTF-8"):
        catalog_import(path=path)


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        (
            "http://127.0.0.1:18480\\@example.com/a.jpg",
            "a URL cannot contain '\\\\' (percent-encode it)",
        ),
        ("https://user:pw@cdn.example.com/a.jpg", "a URL cannot contain user:password@"),
        ("https://cdn.example.com/a{1}.jpg", "a URL cannot contain '{}' (percent-encode it)"),
        ("https://cdn.example.com/a|b.jpg", "a URL cannot contain '|' (percent-encode it)"),
    ],
)
def test_image_urls_must_be_rfc3986_uris(tmp_path, url, detail):
    text = json.dumps({"article_id": "A1", "image_url": url}) + "\n"
    summary = catalog_import(path=write(tmp_path, "c.jsonl", text))
    assert summary.created == 0
    [skipped] = summary.skipped
    assert skipped.reason == MSG_BAD_URL_DETAIL.format(url=url, detail=detail)


def test_image_urls_with_at_signs_in_the_path_or_query_import(tmp_path):
    urls = ["https://cdn.example.com/a@2x.jpg", "https://cdn.example.com/a.jpg?v=@1"]
    text = "".join(
        json.dumps({"article_id": f"A{n}", "image_url": url}) + "\n" for n, url in enumerate(urls)
    )
    summary = catalog_import(path=write(tmp_path, "c.jsonl", text))
    assert summary.created == 2 and not summary.skipped


def test_jsonl_ids_must_be_strings_or_numbers(tmp_path):
    lines = [{"article_id": {"a": 1}, "image_url": "https://shop.example/1.jpg"},
             {"article_id": ["x"], "image_url": "https://shop.example/2.jpg"},
             {"article_id": True, "image_url": "https://shop.example/3.jpg"},
             {"article_id": 42, "image_url": "https://shop.example/4.jpg"}]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n")
    summary = catalog_import(path=path)
    assert [s.reason for s in summary.skipped] == [
        "article_id must be a string or a number; got dict",
        "article_id must be a string or a number; got list",
        "article_id must be a string or a number; got bool"]
    assert list(Article.objects.values_list("article_id", flat=True)) == ["42"]
