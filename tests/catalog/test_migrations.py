"""A database from before additional images migrates with its files and vectors in place."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("catalog", "0002_refresh_error")
AFTER = ("catalog", "0003_article_images_variants")


def migrate(target: tuple[str, str] | None):
    """The catalog at ``target`` (the latest when None), the other apps at their latest."""
    executor = MigrationExecutor(connection)
    leaves = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "catalog"]
    targets = [*leaves, target or max(executor.loader.graph.leaf_nodes("catalog"))]
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def test_single_image_articles_keep_their_file_and_vector():
    from similarity.services.indexing.update import collect_inputs

    old = migrate(BEFORE)
    article = old.get_model("catalog", "Article").objects.create(
        article_id="OLD-1", image_url="https://cdn.example.com/1.jpg", image="images/aa/1.jpg",
        image_sha256="f" * 64, download_status="downloaded",
    )
    vector = np.array([0.6, 0.8], dtype="<f4")
    old.get_model("similarity", "Embedding").objects.create(
        article_id=article.pk, model="m@1", image_sha256="f" * 64, dimension=2,
        vector=vector.tobytes(),
    )
    try:
        new = migrate(AFTER)
        migrated = new.get_model("catalog", "Article").objects.get(article_id="OLD-1")
        assert (migrated.image.name, migrated.image_sha256) == ("images/aa/1.jpg", "f" * 64)
        assert (migrated.item_group_id, migrated.availability) == ("", "")
        assert not new.get_model("catalog", "ArticleImage").objects.exists()
    finally:
        migrate(None)
    inputs = collect_inputs("m@1")
    assert inputs.ids.tolist() == [article.pk]
    assert np.array_equal(inputs.vectors[0], vector)  # bit for bit: no rebuild needed

