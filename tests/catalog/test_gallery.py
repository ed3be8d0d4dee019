"""Several photos per article: the additional-images column of the import, their download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog.models import Article, ArticleImage, article_image_path
from catalog.services.downloads import images_download
from catalog.services.imports import MSG_EXTRA_DROPPED, catalog_import
from demo.sample_images import product_jpeg

pytestmark = pytest.mark.django_db

CSV = """article_id,image_url,title,additional_image_urls
A1,https://cdn.example.com/a1.jpg,Bag,https://cdn.example.com/a1-b.jpg|https://cdn.example.com/a1-c.jpg
A2,https://cdn.example.com/a2.jpg,Shoe,"https://cdn.example.com/a2,side.jpg, https://cdn.example.com/a2-top.jpg"
A3,https://cdn.example.com/a3.jpg,Lamp,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def urls(article_id: str) -> list[str]:
    return list(
        ArticleImage.objects.filter(article__article_id=article_id)
        .order_by("position")
        .values_list("url", flat=True)
    )


def test_additional_images_import_in_order_and_reimport_changes_nothing(tmp_path):
    path = write(tmp_path, "catalog.csv", CSV)
    summary = catalog_import(path=path)
    assert (summary.created, summary.skipped, summary.warnings) == (3, [], [])
    assert urls("A1") == ["https://cdn.example.com/a1-b.jpg", "https://cdn.example.com/a1-c.jpg"]
    # A comma inside a URL stays; a comma before the next URL separates.
    assert urls("A2") == [
        "https://cdn.example.com/a2,side.jpg", "https://cdn.example.com/a2-top.jpg"
    ]
    assert urls("A3") == []
    assert list(ArticleImage.objects.values_list("position", flat=True).order_by("pk")) == [
        1, 2, 1, 2
    ]
    assert "additional_image_urls" not in Article.objects.get(article_id="A1").metadata
    again = catalog_import(path=path)
    assert (again.created, again.updated, again.unchanged, again.images_changed) == (0, 0, 3, 0)


def test_changed_additional_images_keep_unchanged_positions(tmp_path):
    catalog_import(path=write(tmp_path, "a.csv", CSV))
    kept = ArticleImage.objects.get(article__article_id="A1", position=1)
    ArticleImage.objects.filter(pk=kept.pk).update(
        download_status=Article.DownloadStatus.DOWNLOADED, image_sha256="abc"
    )
    changed = CSV.replace("a1-c.jpg", "a1-d.jpg|https://cdn.example.com/a1-e.jpg").replace(
        '"https://cdn.example.com/a2,side.jpg, https://cdn.example.com/a2-top.jpg"', ""
    )
    summary = catalog_import(path=write(tmp_path, "b.csv", changed))
    assert (summary.updated, summary.unchanged, summary.images_changed) == (2, 1, 2)
    assert urls("A1") == [
        "https://cdn.example.com/a1-b.jpg",
        "https://cdn.example.com/a1-d.jpg",
        "https://cdn.example.com/a1-e.jpg",
    ]
    kept.refresh_from_db()
    assert kept.download_status == Article.DownloadStatus.DOWNLOADED  # same URL, same place
    assert ArticleImage.objects.get(article__article_id="A1", position=2).download_status == (
        Article.DownloadStatus.PENDING
    )
    assert urls("A2") == []


def test_bad_additional_urls_are_dropped_with_a_warning_not_the_row(tmp_path):
    lines = [
        {"article_id": "J1", "image_url": "https://cdn.example.com/j1.jpg",
         "additional_image_urls": ["ftp://cdn.example.com/x.jpg", "https://cdn.example.com/j1b.jpg",
                                   "https://cdn.example.com/j1.jpg",
                                   "https://cdn.example.com/j1b.jpg"]},
    ]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(line) for line in lines))
    summary = catalog_import(path=path)
    assert summary.created == 1 and summary.skipped == []
    assert [w.line for w in summary.warnings] == [1]
    assert summary.warnings[0].reason.startswith(MSG_EXTRA_DROPPED.format(position=1, reason=""))
    # The primary image and repeats are not additional images.
    assert urls("J1") == ["https://cdn.example.com/j1b.jpg"]


def test_dry_run_writes_no_additional_images(tmp_path):
    summary = catalog_import(path=write(tmp_path, "a.csv", CSV), dry_run=True)
    assert summary.created == 3 and not ArticleImage.objects.exists()


def test_additional_images_download_with_the_primary_one(tmp_path, loopback):
    primary = loopback.add("/p.jpg", product_jpeg(1, size=64))
    side = loopback.add("/side.jpg", product_jpeg(2, size=64))
    missing = loopback.url("/missing.jpg")
    path = write(
        tmp_path, "a.csv",
        f"article_id,image_url,additional_image_urls\nG1,{primary},{side}|{missing}\n",
    )
    catalog_import(path=path)
    summary = images_download(progress=False, workers=2, retries=0, allow_private=True)
    assert (summary.total, summary.downloaded, summary.failed) == (3, 2, 1), summary.failures
    assert summary.failures == [("G1 image 2", "HTTP 404 Not Found")]
    image = ArticleImage.objects.get(position=1)
    assert image.has_image and image.image_width == 64 and len(image.image_sha256) == 64
    assert image.image.name == article_image_path("G1", "jpg", 1)
    assert image.image.name != Article.objects.get().image.name
    failed = ArticleImage.objects.get(position=2)
    assert failed.download_status == Article.DownloadStatus.FAILED
    assert Article.objects.get().has_image  # the article stays whole without that photo
    again = images_download(progress=False, workers=2, retries=0, allow_private=True)
    assert (again.downloaded, again.skipped, again.failed) == (0, 2, 0)
    assert loopback.hits["/side.jpg"] == 1
