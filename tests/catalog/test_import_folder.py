"""import_folder: photos in a folder become articles with stored images, idempotently."""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.management.commands.import_catalog import EXIT_ROWS_SKIPPED
from catalog.models import Article
from catalog.services.folders import catalog_import_folder
from demo.sample_images import product_image

pytestmark = pytest.mark.django_db


def photo(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    product_image(seed, size=64).save(path, fmt)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    photo(root / "fruit" / "red-apple_1.jpg", 1)
    photo(root / "fruit" / "pear.png", 2, "PNG")
    photo(root / "mug.jpg", 3)
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(b"x")
    return root


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_folder", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_folder_becomes_articles_with_stored_images(folder, data_dir):
    out, _ = run(str(folder))
    assert "3 new, 0 updated, 0 unchanged, 0 skipped" in out
    apple = Article.objects.get(article_id="fruit/red-apple_1")
    assert (apple.category, apple.title) == ("fruit", "red apple 1")
    assert apple.has_image and apple.image.name.endswith(".jpg")
    assert (data_dir / "media" / apple.image.name).read_bytes() == (
        folder / "fruit" / "red-apple_1.jpg").read_bytes()
    assert apple.image_url == apple.downloaded_url == (folder / "fruit/red-apple_1.jpg").as_uri()
    mug = Article.objects.get(article_id="mug")
    assert mug.category == "" and (mug.image_width, mug.image_height) == (64, 64)
    assert Article.objects.get(article_id="fruit/pear").image.name.endswith(".png")


def test_rerun_is_unchanged_and_a_changed_photo_is_updated(folder):
    run(str(folder))
    out, _ = run(str(folder))
    assert "0 new, 0 updated, 3 unchanged, 0 skipped" in out
    photo(folder / "mug.jpg", 9)
    out, _ = run(str(folder))
    assert "0 new, 1 updated, 2 unchanged" in out


def test_bad_photo_is_skipped_with_reason_and_exit_code(folder):
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(CommandError) as caught:
        run(str(folder))
    assert caught.value.returncode == EXIT_ROWS_SKIPPED
    assert Article.objects.count() == 3
    summary = catalog_import_folder(directory=folder)
    assert [s.file for s in summary.skipped] == ["broken.jpg"]
    assert "not an image" in summary.skipped[0].reason


def test_labels_decide_ids_and_categories(folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("article_id,image_file,category,product\n"
                      "A1,fruit/red-apple_1.jpg,apple,red-apple\nM1,mug.jpg,,mug-blue\n"
                      "X1,missing.jpg,x,x\n")
    summary = catalog_import_folder(directory=folder, labels=labels)
    assert summary.created == 2
    assert {(s.file, s.reason) for s in summary.skipped} == {
        ("missing.jpg", "image file 'missing.jpg' does not exist"),
    }
    assert summary.not_listed == 1  # fruit/pear.png: left out on purpose, not skipped
    apple = Article.objects.get(article_id="A1")
    assert apple.category == "apple" and apple.metadata["product"] == "red-apple"


def test_files_not_in_the_labels_are_left_out_without_a_partial_exit(folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("article_id,image_file\nA1,fruit/red-apple_1.jpg\n")
    out, err = run(str(folder), "--labels", str(labels))  # exits 0: no CommandError
    assert "1 new, 0 updated, 0 unchanged, 0 skipped; " \
        "2 files not in the labels file, left out" in out
    assert "skipped" not in err
    assert list(Article.objects.values_list("article_id", flat=True)) == ["A1"]

    labels.write_text("article_id,image_file\nA1,fruit/red-apple_1.jpg\nX1,gone.jpg\n")
    with pytest.raises(CommandError) as caught:  # a listed file that fails is still skipped
        run(str(folder), "--labels", str(labels))
    assert caught.value.returncode == EXIT_ROWS_SKIPPED


def test_dry_run_writes_nothing(folder):
    out, _ = run(str(folder), "--dry-run")
    assert "3 new" in out and "dry run" in out
    assert Article.objects.count() == 0


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="not a directory"):
        run(str(tmp_path / "nope"))


def test_fifos_devices_outside_links_and_loops_are_skipped_with_a_reason(tmp_path):
    from tests.hostile_folder import hostile_folder

    root, expected = hostile_folder(tmp_path)
    summary = catalog_import_folder(directory=root)
    assert summary.created == 2  # good and the link to it inside the folder
    assert {s.file: s.reason for s in summary.skipped} == expected
    assert not Article.objects.filter(article_id__in=["outside", "fifo", "device"]).exists()


def test_folder_ids_follow_the_catalog_import_rules(tmp_path):
    root = tmp_path / "photos"
    photo(root / "x" / "similar.jpg", 1)
    photo(root / "bad\x01name.jpg", 2)
    photo(root / "ok.jpg", 3)
    photo(Path(os.fsdecode(bytes(root) + b"/caf\xe9.jpg")), 4)  # not UTF-8: a surrogate
    summary = catalog_import_folder(directory=root)
    reasons = {s.file: s.reason for s in summary.skipped}
    assert reasons["x/similar.jpg"].endswith("which is an API route")
    assert "control character" in reasons["bad\x01name.jpg"]
    assert any("surrogate" in reason for reason in reasons.values())
    assert list(Article.objects.values_list("article_id", flat=True)) == ["ok"]
