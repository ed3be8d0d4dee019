"""A new model family is one backend and one registration: a toy family builds and serves an
index end to end (embed, index, search by article and by image, the API's index answer)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from PIL import Image

from demo.sample_images import product_image
from similarity.conf import similarity_settings
from similarity.engine.embedders import (
    Embedder,
    ModelFamily,
    Thresholds,
    clear_embedder_cache,
    load_embedder,
    parse_model_spec,
    register,
    unregister,
)
from similarity.engine.embedders.base import Batch, preprocessing_description
from similarity.engine.index import current_build
from similarity.models import Embedding, IndexBuild
from similarity.selectors.search import similar_to_article, similar_to_image
from similarity.services.builds.runs import index_build_run
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db


class GridColourEmbedder(Embedder):
    """Mean colour of each cell of an n x n grid, centred on the image's mean colour: a
    tiny, deterministic, real image feature (layout and colour), no weights."""

    supports_text = False

    def __init__(self, side: int) -> None:
        if side < 1:
            raise ValueError(f"grid side must be >= 1; got {side}")
        self.side = side
        self.name = f"toy:{side}"
        self.dimension = 3 * side * side
        self.image_size = 8 * side

    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        cells = [
            np.asarray(image.convert("RGB").resize((self.side, self.side), Image.Resampling.BOX),
                       dtype=np.float32).reshape(-1) / 255.0
            for image in images
        ]
        return np.stack(cells)

    def _forward(self, batch: Batch) -> np.ndarray:
        array = np.asarray(batch, dtype=np.float32)
        means = array.reshape(len(array), -1, 3).mean(axis=1)
        return array - np.tile(means, self.side * self.side)

    def preprocessing(self) -> dict:
        return preprocessing_description(
            client_computable=True, image_size=self.side, resize=f"box to {self.side}x"
            f"{self.side}", rescale=1 / 255, description="grid colours minus their mean")

    def identity(self) -> str:
        return f"{self.name}@v1"


TOY = ModelFamily(
    name="toy",
    prefix="toy:",
    load=lambda reference, device: GridColourEmbedder(int(reference)),
    uses_torch=False,
    preprocessing="box-resized n x n grid of colours, minus their mean",
    thresholds=Thresholds(duplicate=0.01, similar=0.2),
)


@pytest.fixture
def toy_family() -> Iterator[ModelFamily]:
    register(TOY)  # the one place the family is made known
    yield TOY
    unregister(TOY.name)
    clear_embedder_cache()


def test_the_toy_family_parses_and_loads(toy_family):
    assert parse_model_spec(" toy: 4 ").canonical == "toy:4"
    embedder = load_embedder("toy:4")
    vectors = embedder.embed_images([product_image(1, size=64), product_image(2, size=64)])
    assert vectors.shape == (2, 48)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert float(vectors[0] @ vectors[1]) < 0.999  # different photos, different vectors


def test_a_spec_another_family_claims_is_refused(toy_family):
    with pytest.raises(ValueError, match="already registered"):
        register(TOY)
    clash = ModelFamily(name="toy2", prefix="toy:", load=TOY.load)
    with pytest.raises(ValueError, match="claims 'toy:', already claimed by 'toy'"):
        register(clash)


def test_a_registered_family_builds_and_serves_an_index(toy_family, client):
    articles = make_catalog(8)
    build = index_build_run(model="toy:4", progress=False)
    assert build.status == IndexBuild.Status.SUCCEEDED
    info = current_build(similarity_settings().index_root)
    assert (info.manifest.model, info.manifest.model_identity) == ("toy:4", "toy:4@v1")
    assert info.manifest.dimension == 48 and info.manifest.count == 8
    assert Embedding.objects.filter(model="toy:4@v1", dimension=48).count() == 8

    first = articles[0].article_id
    answer = similar_to_article(article_id=first, k=3)
    assert answer.model == "toy:4"
    assert answer.results[0].article_id == first
    by_image = similar_to_image(image=product_image(3, size=96), k=1)
    assert by_image.results[0].article_id == articles[3].article_id

    assert similarity_settings().duplicate_threshold_for("toy:4") == 0.01
    current = client.get("/api/index/").json()["current"]
    assert current["model"] == "toy:4"
    assert current["preprocessing"]["description"] == "grid colours minus their mean"
