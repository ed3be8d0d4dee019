"""The core's preprocessing, read from a CLIP processor, gives the processor's own pixels."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from demo.sample_images import product_image
from similarity.engine.embedders import load_embedder
from similarity.engine.embedders.fastprep import pixel_spec_for_processor
from tests.similarity.engine.tiny_models import build_tiny_clip

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_embedder(str(build_tiny_clip(tmp_path_factory.mktemp("fastprep") / "clip")))


def test_fast_twin_matches_the_processor_on_many_shapes(clip):
    assert clip._fast is not None
    images = [product_image(seed, size=90).resize(size) for seed, size in
              enumerate([(90, 90), (120, 45), (33, 200), (500, 499), (31, 32)])]
    images.append(Image.new("L", (64, 48), 120).convert("RGB"))
    fast = clip._fast(images)
    reference = clip._model.preprocess(images)["pixel_values"].numpy()
    assert fast.shape == reference.shape
    assert float(np.abs(fast - reference).max()) < 1e-5
    np.testing.assert_allclose(clip.embed_images(images[:2]), clip._forward(
        clip._model.preprocess(images[:2])) / np.linalg.norm(
        clip._forward(clip._model.preprocess(images[:2])), axis=1, keepdims=True), atol=1e-5)


def test_processors_it_cannot_reproduce_get_no_twin():
    class Other:
        pass

    assert pixel_spec_for_processor(Other()) is None
    assert pixel_spec_for_processor(None) is None


def test_the_clip_spec_is_published_and_client_computable(clip):
    spec = clip.pixel_spec()
    assert spec is not None and spec.resize == "shortest_edge" and spec.crop is not None
    described = clip.preprocessing()
    assert described["client_computable"] is True
    assert described["spec"] == spec.as_dict()
