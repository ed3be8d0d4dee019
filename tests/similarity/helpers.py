"""Helpers for similarity tests: a small catalog of generated photos already on disk."""

from __future__ import annotations

import io

from PIL import Image

from catalog.models import Article
from catalog.services.images import additional_image_store, article_image_store
from demo.sample_images import category_for, product_image


def store_image(article: Article, image: Image.Image, quality: int = 90) -> Article:
    """Store ``image`` as the article's downloaded file (the catalog's one image writer)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return article_image_store(article=article, data=buffer.getvalue())


def make_catalog(count: int = 12, *, size: int = 96, start: int = 0) -> list[Article]:
    """``count`` downloaded articles with distinct generated photos (seed = number)."""
    articles = []
    for seed in range(start, start + count):
        article = Article.objects.create(
            article_id=f"S{seed:04d}",
            title=f"Sample {seed}",
            category=category_for(seed),
            image_url=f"http://127.0.0.1:9/S{seed:04d}.jpg",
        )
        articles.append(store_image(article, product_image(seed, size=size)))
    return articles


def store_additional(article: Article, position: int, image: Image.Image) -> None:
    """Store ``image`` as the article's additional photo at ``position``."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    additional_image_store(
        article=article, position=position, data=buffer.getvalue(),
        url=f"http://127.0.0.1:9/{article.article_id}-{position}.jpg",
    )
