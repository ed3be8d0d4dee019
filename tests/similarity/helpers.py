"""Helpers for similarity tests: a small catalog of generated photos already on disk."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from django.conf import settings
from PIL import Image

from catalog.models import Article, article_image_path
from demo.sample_images import category_for, product_image


def store_image(article: Article, image: Image.Image, quality: int = 90) -> Article:
    """Write ``image`` as the article's downloaded file and mark it downloaded."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    data = buffer.getvalue()
    name = article_image_path(article.article_id, "jpg")
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    article.image = name
    article.image_sha256 = hashlib.sha256(data).hexdigest()
    article.download_status = Article.DownloadStatus.DOWNLOADED
    article.downloaded_url = article.image_url
    article.save()
    return article


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
