"""Articles with several photos: every image embedded once, the article's vector their
normalised mean, incremental per image, results saying which photo matched."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.models import Article, ArticleImage
from demo.sample_images import product_image
from similarity.engine.index.aggregate import aggregate_by_article, group_signature
from similarity.models import Embedding, IndexBuild
from similarity.selectors.search import similar_to_article, similar_to_image
from similarity.selectors.store import get_store
from similarity.services.builds.runs import index_build_run
from similarity.services.indexing.update import collect_inputs
from tests.similarity.helpers import make_catalog, store_additional

pytestmark = pytest.mark.django_db


def vectors_of(article: Article) -> np.ndarray:
    rows = Embedding.objects.filter(article=article).order_by("pk").values_list("vector", flat=True)
    return np.stack([np.frombuffer(bytes(blob), dtype="<f4") for blob in rows])


@pytest.fixture
def catalog() -> list[Article]:
    articles = make_catalog(12, size=64)
    store_additional(articles[3], 1, product_image(100, size=64))
    store_additional(articles[3], 2, product_image(101, size=64))
    return articles


def build() -> IndexBuild:
    return index_build_run(model="classic", progress=False)


def test_every_image_is_embedded_and_the_article_vector_is_their_mean(catalog):
    run = build()
    assert run.embedded_count == 14 and Embedding.objects.count() == 14
    inputs = collect_inputs(run.manifest["model_identity"])
    assert inputs.ids.tolist() == [article.pk for article in catalog]
    several = vectors_of(catalog[3])
    mean = several.mean(axis=0)
    np.testing.assert_allclose(inputs.vectors[3], mean / np.linalg.norm(mean), atol=1e-6)
    embedding_pks = Embedding.objects.filter(article=catalog[3]).values_list("pk", flat=True)
    assert inputs.embedding_pks[3] == group_signature(np.array(list(embedding_pks)))
    # One photo: its own vector, bit for bit (single-image catalogs index as before).
    assert np.array_equal(inputs.vectors[0], vectors_of(catalog[0])[0])


def test_results_say_which_photo_matched(catalog):
    build()
    result = similar_to_image(image=product_image(101, size=64), k=12)
    by_id = {row.article_id: row for row in result.results}
    matched = by_id["S0003"].matched_image
    assert matched is not None and matched.position == 2
    assert matched.image_url.endswith("S0003-2.jpg") and matched.score > by_id["S0003"].score
    assert by_id["S0000"].matched_image.position == 0
    assert by_id["S0000"].matched_image.score == pytest.approx(by_id["S0000"].score)
    own = similar_to_article(article_id="S0003", k=3)
    assert own.results[0].article_id == "S0003" and own.results[0].distance < 1e-5


def test_a_changed_photo_is_embedded_alone_and_updates_the_index_incrementally(catalog):
    build()
    store_additional(catalog[3], 2, product_image(102, size=64))
    changed = build()
    assert (changed.mode, changed.embedded_count, changed.reused_count) == ("incremental", 1, 13)
    assert (changed.added_count, changed.removed_count) == (1, 1)
    assert Embedding.objects.filter(article=catalog[3]).count() == 3  # the old vector went
    ArticleImage.objects.filter(article=catalog[3], position=1).delete()
    removed = build()
    assert (removed.mode, removed.embedded_count) == ("incremental", 0)
    assert Embedding.objects.filter(article=catalog[3]).count() == 2
    loaded = get_store().get()
    stored = loaded.index.reconstruct(catalog[3].pk)
    mean = vectors_of(catalog[3]).mean(axis=0)
    np.testing.assert_allclose(stored, mean / np.linalg.norm(mean), atol=1e-6)
    assert build().mode == "unchanged"


def test_a_failed_additional_photo_leaves_the_article_indexed_by_the_others(catalog):
    ArticleImage.objects.filter(article=catalog[3], position=2).update(
        download_status=Article.DownloadStatus.FAILED
    )
    run = build()
    assert run.embedded_count == 13
    inputs = collect_inputs(run.manifest["model_identity"])
    mean = vectors_of(catalog[3]).mean(axis=0)
    np.testing.assert_allclose(inputs.vectors[3], mean / np.linalg.norm(mean), atol=1e-6)


def test_aggregate_by_article_checks_its_input():
    vectors = np.eye(3, dtype=np.float32)
    ids, keys, out = aggregate_by_article(np.array([1, 1, 2]), np.array([7, 8, 9]), vectors)
    assert ids.tolist() == [1, 2] and keys[0] < 0 and keys[1] == 9
    np.testing.assert_allclose(out[0], [2**-0.5, 2**-0.5, 0], atol=1e-6)
    assert group_signature(np.array([8, 7])) == group_signature(np.array([7, 8]))
    with pytest.raises(ValueError, match="sorted"):
        aggregate_by_article(np.array([2, 1, 1]), np.array([7, 8, 9]), vectors)
    with pytest.raises(ValueError, match="aligned"):
        aggregate_by_article(np.array([1, 2]), np.array([7, 8, 9]), vectors)
