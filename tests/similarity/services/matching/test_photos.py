"""Supplier matching against a real index: folder and feed sources, verdicts, errors, resume."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from lookalike_core.match_report import ReportError, report_rows_read
from PIL import Image

from demo.loopback import LoopbackServer
from demo.sample_images import product_image
from similarity.conf import similarity_settings
from similarity.services.builds.runs import index_build_run
from similarity.services.matching.photos import supplier_photos_match
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db

COPIES = (0, 3, 7)  # catalog articles S0000, S0003, S0007 get resized, recompressed copies


def jpeg(image: Image.Image, quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def near_copy(seed: int) -> bytes:
    """A supplier's copy of a catalog photo (make_catalog's, 160 px): resized, recompressed."""
    return jpeg(product_image(seed, size=160).resize((200, 200)), quality=75)


def unrelated(seed: int) -> bytes:
    """A photo of nothing in the catalog (noise)."""
    rng = np.random.default_rng(seed)
    return jpeg(Image.fromarray(rng.integers(0, 255, (180, 180, 3), dtype=np.uint8)))


@pytest.fixture
def catalog() -> list:
    articles = make_catalog(12, size=160)
    index_build_run(model="classic", progress=False)
    return articles


def feed(loopback: LoopbackServer, tmp_path: Path) -> Path:
    """A CSV feed: 3 near-copies, 2 unrelated photos, a 404, a broken image, extra columns."""
    rows = [("supplier_ref", "image_url", "price")]
    for seed in COPIES:
        rows.append((f"COPY-{seed}", loopback.add(f"/copy{seed}.jpg", near_copy(seed)), "9.90"))
    for seed in (1, 2):
        rows.append((f"OTHER-{seed}", loopback.add(f"/other{seed}.jpg", unrelated(seed)), "1"))
    rows.append(("MISSING", loopback.url("/missing.jpg"), "2"))
    rows.append(("BROKEN", loopback.add("/broken.jpg", b"\xff\xd8\xff not a jpeg"), "3"))
    path = tmp_path / "supplier.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def by_ref(path: Path) -> dict:
    return {row.supplier_ref: row for row in report_rows_read(path=path)}


def test_csv_feed_gives_verdicts_matches_and_row_errors(catalog, loopback, tmp_path):
    report = tmp_path / "report.csv"
    summary = supplier_photos_match(source=feed(loopback, tmp_path), output=report, k=3,
                                    progress=False)

    rows = by_ref(report)
    assert set(rows) == {"COPY-0", "COPY-3", "COPY-7", "OTHER-1", "OTHER-2", "MISSING", "BROKEN"}
    duplicate = similarity_settings().duplicate_threshold_for("classic")
    for seed in COPIES:
        row = rows[f"COPY-{seed}"]
        assert row.verdict == "same", row
        assert row.matches[0][0] == catalog[seed].article_id
        assert row.matches[0][1] <= duplicate and len(row.matches) == 3
        assert row.extra == {"price": "9.90"}
    for ref in ("OTHER-1", "OTHER-2"):
        assert rows[ref].verdict == "new", rows[ref]
        assert rows[ref].matches[0][1] > summary.similar_threshold
    assert rows["MISSING"].verdict == "error" and "HTTP 404" in rows["MISSING"].error
    assert rows["BROKEN"].verdict == "error" and rows["BROKEN"].error
    assert summary.counts == {"same": 3, "similar": 0, "new": 2, "error": 2}
    assert dict(summary.errors).keys() == {"MISSING", "BROKEN"}

    header = report.read_text().splitlines()[0].split(",")
    ranked = [f"{name}_{rank}" for rank in (1, 2, 3)
              for name in ("match", "distance", "inliers", "inlier_ratio")]
    assert header == ["supplier_ref", "verdict", *ranked, "error", "price"]


def test_folder_source_refs_are_relative_paths_and_jsonl_report(catalog, tmp_path):
    folder = tmp_path / "photos"
    (folder / "shirts").mkdir(parents=True)
    (folder / "shirts" / "copy-3.jpg").write_bytes(near_copy(3))
    (folder / "noise.jpg").write_bytes(unrelated(5))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photo: ignored")
    report = tmp_path / "report.jsonl"

    summary = supplier_photos_match(source=folder, output=report, k=2, progress=False)

    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [line["supplier_ref"] for line in lines] == ["empty", "noise", "shirts/copy-3"]
    copy = lines[2]
    assert copy["verdict"] == "same"
    assert copy["matches"][0]["article_id"] == catalog[3].article_id
    assert lines[1]["verdict"] == "new" and lines[0]["verdict"] == "error"
    assert summary.failed == 1 and summary.matched == 2


def test_similar_threshold_option_turns_new_into_similar(catalog, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "other.jpg").write_bytes(jpeg(product_image(103, size=200)))  # a look-alike
    first = supplier_photos_match(source=folder, output=tmp_path / "a.csv", progress=False,
                                  similar_threshold=0.01)
    second = supplier_photos_match(source=folder, output=tmp_path / "b.csv", progress=False,
                                   similar_threshold=1.5)
    assert first.counts["new"] == 1 and second.counts["similar"] == 1


def test_rerun_skips_rows_already_in_the_report_and_retries_errors(catalog, loopback,
                                                                   tmp_path):
    source, report = feed(loopback, tmp_path), tmp_path / "report.csv"
    supplier_photos_match(source=source, output=report, k=2, progress=False)
    fetched = dict(loopback.hits)
    loopback.add("/missing.jpg", near_copy(7))  # the supplier fixed the 404

    summary = supplier_photos_match(source=source, output=report, k=2, progress=False)

    assert summary.already_done == 5
    assert summary.counts == {"same": 1, "similar": 0, "new": 0, "error": 1}
    for path, count in fetched.items():
        if path not in ("/missing.jpg", "/broken.jpg"):
            assert loopback.hits[path] == count, path  # not fetched again
    rows = list(report_rows_read(path=report))
    assert len(rows) == 7 and len({row.supplier_ref for row in rows}) == 7
    assert by_ref(report)["MISSING"].verdict == "same"
    assert report.read_text().count("supplier_ref,verdict") == 1  # the header once


@pytest.mark.parametrize("name", ["report.csv", "report.jsonl"])
def test_a_torn_last_line_is_matched_again(catalog, loopback, tmp_path, name):
    source, report = feed(loopback, tmp_path), tmp_path / name
    supplier_photos_match(source=source, output=report, k=2, progress=False)
    text = report.read_text()
    report.write_text(text[: text.index("COPY-7") + 9])  # killed in the middle of a line
    summary = supplier_photos_match(source=source, output=report, k=2, progress=False)
    assert summary.counts["same"] == 1  # COPY-7 again
    assert by_ref(report)["COPY-7"].verdict == "same"
    assert len(list(report_rows_read(path=report))) == 7


def test_resume_with_other_columns_is_refused(catalog, loopback, tmp_path):
    source, report = feed(loopback, tmp_path), tmp_path / "report.csv"
    supplier_photos_match(source=source, output=report, k=2, progress=False)
    with pytest.raises(ReportError, match="other columns"):
        supplier_photos_match(source=source, output=report, k=3, progress=False)


def test_feed_rows_without_ref_or_url_and_repeated_refs_are_errors(catalog, loopback,
                                                                   tmp_path):
    url = loopback.add("/a.jpg", near_copy(0))
    source = tmp_path / "feed.jsonl"
    source.write_text("\n".join([
        json.dumps({"supplier_ref": "A", "image_url": url, "colour": "red"}),
        json.dumps({"supplier_ref": "", "image_url": url}),
        json.dumps({"supplier_ref": "B"}),
        "{not json",
        json.dumps({"supplier_ref": "A", "image_url": url}),
    ]) + "\n")
    report = tmp_path / "report.csv"
    summary = supplier_photos_match(source=source, output=report, progress=False)
    rows = list(report_rows_read(path=report))
    errors = {row.supplier_ref: row.error for row in rows if row.verdict == "error"}
    assert errors == {
        "line 2": "missing supplier_ref", "B": "missing image_url",
        "line 4": errors["line 4"], "A (line 5)": errors["A (line 5)"],
    }
    assert errors["line 4"].startswith("invalid JSON")
    assert "repeated (first on line 1)" in errors["A (line 5)"]
    assert rows[0].extra == {"extra": json.dumps({"colour": "red"})}
    assert summary.counts["same"] == 1 and loopback.hits["/a.jpg"] == 1


def test_private_addresses_are_refused_unless_allowed(catalog, loopback, tmp_path, settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "DOWNLOAD_ALLOW_PRIVATE": False}
    report = tmp_path / "report.csv"
    summary = supplier_photos_match(source=feed(loopback, tmp_path), output=report,
                                    progress=False)
    assert summary.failed == 7 and not loopback.hits
    assert all("refused" in row.error for row in report_rows_read(path=report))


def test_command_exit_codes(catalog, loopback, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    (good / "copy.jpg").write_bytes(near_copy(0))
    call_command("match_images", str(good), "--output", str(tmp_path / "good.csv"),
                 "--no-progress")
    assert "1 same, 0 similar, 0 new, 0 error" in capsys.readouterr().out

    with pytest.raises(CommandError) as failed:
        call_command("match_images", str(feed(loopback, tmp_path)), "--output",
                     str(tmp_path / "feed.csv"), "--no-progress")
    assert failed.value.returncode == 2 and "2 row(s) failed" in str(failed.value)
    assert "MISSING: HTTP 404" in capsys.readouterr().err

    bad = tmp_path / "bad.csv"
    bad.write_text("ref,url\nA,http://x\n")
    with pytest.raises(CommandError, match="missing supplier_ref, image_url") as unusable:
        call_command("match_images", str(bad), "--output", str(tmp_path / "r.csv"))
    assert unusable.value.returncode == 1
    with pytest.raises(CommandError, match="no such file"):
        call_command("match_images", str(tmp_path / "absent"), "--output", str(tmp_path / "r.csv"))
    with pytest.raises(CommandError, match=r"must end in \.csv"):
        call_command("match_images", str(good), "--output", str(tmp_path / "r.txt"))


def test_no_index_is_an_unusable_run(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(CommandError, match="no index has been built") as error:
        call_command("match_images", str(folder), "--output", str(tmp_path / "r.csv"))
    assert error.value.returncode == 1


def test_the_index_runtime_is_used_and_loaded_once_per_process(catalog, monkeypatch):
    """Matching embeds as API queries do: the one provider, on the runtime of the index."""
    from dataclasses import replace

    from similarity import embedders
    from similarity.selectors.search import query_embedder
    from similarity.selectors.store import get_store

    calls = []

    def select(embedder, runtime, **kwargs):
        calls.append(runtime)
        return embedder, embedders.RuntimeChoice(requested=runtime, runtime=runtime)

    monkeypatch.setattr(embedders, "select_runtime", select)
    embedders.embedders_clear()
    loaded = get_store().get()
    assert query_embedder(loaded).identity().startswith("classic")  # torch: as is
    onnx = replace(loaded, manifest=replace(loaded.manifest, extra={"runtime": "onnx"}))
    assert query_embedder(onnx) is query_embedder(onnx)
    assert calls == ["onnx"]
    embedders.embedders_clear()


def test_folder_source_reports_fifos_devices_outside_links_and_loops(catalog, tmp_path):
    from lookalike_core.sources import supplier_source_open

    from tests.hostile_folder import hostile_folder

    root, expected = hostile_folder(tmp_path)
    rows = list(supplier_source_open(path=root).rows())
    errors = {row.supplier_ref: row.error for row in rows if row.error}
    assert errors == {name.removesuffix(".jpg"): reason for name, reason in expected.items()}
    assert sorted(row.supplier_ref for row in rows if not row.error) == ["alias", "good"]
    summary = supplier_photos_match(source=root, output=tmp_path / "r.csv", progress=False)
    assert dict(summary.errors) == errors and summary.counts["error"] == len(expected)
