"""API test fixtures: a client, a real classic-model index over a small catalog, a tiny CLIP."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.core.cache import cache
from PIL import Image
from rest_framework.test import APIClient

from catalog.models import Article
from demo.sample_images import product_image
from similarity.services.builds.runs import index_build_run
from tests.similarity.engine.tiny_models import build_tiny_clip
from tests.similarity.helpers import make_catalog

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may touch the network


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache; every test starts from zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def catalog(db) -> list[Article]:
    """15 downloaded articles indexed with the classic embedder."""
    articles = make_catalog(15)
    index_build_run(model="classic", progress=False)
    return articles


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def photo_png() -> bytes:
    return png_bytes(product_image(7, size=160))
