"""Duplicate groups hold together on the demo catalog and a 5k-article catalog with chains."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from catalog.models import Article
from catalog.services.images import article_image_store
from demo.catalogs import catalog_from_vectors, chained_vectors
from demo.services import demo_images
from similarity.conf import similarity_settings
from similarity.engine.index import connected_components
from similarity.selectors.duplicates import duplicate_groups_find
from similarity.services.builds.runs import index_build_run
from similarity.services.indexing.update import collect_inputs

pytestmark = pytest.mark.django_db


def widest_pair(identity: str, groups) -> float:
    """The largest distance between two members of any group (brute force over vectors)."""
    inputs = collect_inputs(identity)
    row = {int(pk): n for n, pk in enumerate(inputs.ids)}
    widest = 0.0
    for group in groups:
        vectors = inputs.vectors[[row[m.pk] for m in group.members]]
        widest = max(widest, float((1 - vectors @ vectors.T).max()))
    return widest


def single_linkage_sizes(vectors: np.ndarray, threshold: float) -> dict[int, int]:
    """Group sizes the old grouping (connected components of the threshold graph) gave."""
    distances = 1 - vectors @ vectors.T
    rows, cols = np.nonzero(np.triu(distances < threshold, k=1))
    components = connected_components(zip(rows.tolist(), cols.tolist(), strict=True))
    return dict(sorted(Counter(len(c) for c in components).items()))


def test_demo_catalog_groups_hold_together():
    for image in demo_images():
        article = Article.objects.create(article_id=image.article_id, title=image.title,
                                         category=image.category,
                                         image_url=f"http://127.0.0.1:9{image.path}")
        article_image_store(article=article, data=image.body)
    index_build_run(model="classic", progress=False)
    report = duplicate_groups_find()
    threshold = similarity_settings().duplicate_threshold_for("classic")
    assert report.groups
    assert widest_pair("classic@v2", report.groups) < threshold
    sizes = Counter(len(g.members) for g in report.groups)
    linked = single_linkage_sizes(collect_inputs("classic@v2").vectors, threshold)
    print(f"demo catalog (70 articles, classic, threshold {threshold}): "
          f"{len(report.groups)} star groups, sizes {dict(sorted(sizes.items()))}; "
          f"single linkage: {sum(linked.values())} groups, sizes {linked}")
    # The ten re-listed copies (400 px, JPEG 70) are grouped with their original: classic v2
    # (mirror- and frame-robust, colour weighted more) pairs 8 of the 10 at 0.05.
    pairs = {tuple(g.article_ids) for g in report.groups}
    assert sum((f"P{n:04d}", f"P{n:04d}-B") in pairs for n in range(10)) >= 8


def test_5k_catalog_with_chains_has_no_group_wider_than_the_threshold():
    vectors = chained_vectors(5000)
    identity = catalog_from_vectors(vectors)
    threshold = similarity_settings().duplicate_threshold_for("synthetic")
    report = duplicate_groups_find(threshold=threshold)
    assert widest_pair(identity, report.groups) < threshold
    sizes = Counter(len(g.members) for g in report.groups)
    linked = single_linkage_sizes(vectors, threshold)
    print(f"5k synthetic catalog (threshold {threshold}): {len(report.groups)} star groups, "
          f"sizes {dict(sorted(sizes.items()))}; single linkage: "
          f"{sum(linked.values())} groups, sizes {linked}")
    assert max(sizes) <= 4 < max(linked)  # chains of 20 no longer merge
    assert sizes[4] >= 400  # the 500 near-copy clusters stay whole (a few touch a chain)
