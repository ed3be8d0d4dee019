"""Every similar and batch result carries the served copy of its image, whatever the source."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest

from catalog.services.folders import catalog_import_folder
from demo.sample_images import product_image
from similarity.services.builds.runs import index_build_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def folder_catalog(tmp_path) -> list[str]:
    """Six photos imported from a folder (image_url file://...), indexed with classic."""
    folder = tmp_path / "photos" / "shoes"
    folder.mkdir(parents=True)
    for seed in range(6):
        product_image(seed, size=96).save(folder / f"shoe-{seed}.jpg", "JPEG")
    catalog_import_folder(directory=tmp_path / "photos")
    index_build_run(model="classic", progress=False)
    return [f"shoes/shoe-{seed}" for seed in range(6)]


def _assert_served(client, rows: list[dict]) -> None:
    assert rows
    for row in rows:
        assert row["image_url"].startswith("file://")  # the folder import's source
        parts = urlsplit(row["image"])
        assert parts.scheme in {"http", "https"}, row
        served = client.get(parts.path)
        assert served.status_code == 200, row["image"]
        body = b"".join(served.streaming_content) if served.streaming else served.content
        assert body[:3] == b"\xff\xd8\xff"  # the JPEG itself


def test_similar_batch_and_image_query_results_carry_a_served_image_url(client, folder_catalog):
    first = folder_catalog[0]
    similar = client.get(f"/api/articles/{first}/similar/", {"k": 5})
    assert similar.status_code == 200
    _assert_served(client, similar.json()["results"])

    batch = client.post("/api/similar/batch/", {"items": [{"article_id": a} for a in
                                                           folder_catalog[:3]], "k": 3},
                        format="json")
    assert batch.status_code == 200
    for answer in batch.json()["results"]:
        assert answer["status"] == 200
        _assert_served(client, answer["results"])

    photo = io.BytesIO()
    product_image(2, size=96).save(photo, "JPEG")
    photo.seek(0)
    photo.name = "query.jpg"
    by_photo = client.post("/api/similar/", {"image": photo, "k": 3}, format="multipart")
    assert by_photo.status_code == 200
    _assert_served(client, by_photo.json()["results"])
