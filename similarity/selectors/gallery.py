"""Which photo of a result matched: the image of an article closest to the query vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catalog.models import Article, ArticleImage, ArticlePk
from similarity.engine.index.aggregate import best_image
from similarity.selectors.vectors import current_embeddings


@dataclass(frozen=True)
class MatchedImage:
    """One of an article's photos: its position (0 = the primary image), URL, storage name,
    and cosine similarity to the query."""

    position: int
    image_url: str
    image: str
    score: float


def matched_images(
    identity: str, query: np.ndarray, article_pks: list[ArticlePk]
) -> dict[ArticlePk, MatchedImage]:
    """The photo closest to ``query`` of each article in ``article_pks`` that has stored
    vectors for several images (two queries, whatever the number of articles)."""
    if not article_pks:
        return {}
    photos: dict[tuple[ArticlePk, str], tuple[int, str, str]] = {}
    primaries = Article.objects.filter(pk__in=article_pks).values_list(
        "pk", "image_sha256", "image_url", "image"
    )
    for pk, sha, url, name in primaries:
        photos[(pk, sha)] = (0, url, str(name or ""))
    additional = ArticleImage.objects.filter(
        article__in=article_pks, download_status=Article.DownloadStatus.DOWNLOADED
    ).values_list("article_id", "image_sha256", "position", "url", "image")
    for article_pk, sha, position, url, name in additional:
        photos.setdefault((article_pk, sha), (position, url, str(name or "")))
    rows = current_embeddings(identity).filter(article__in=article_pks).values_list(
        "article_id", "image_sha256", "vector"
    )
    by_article: dict[ArticlePk, list[tuple[str, bytes]]] = {}
    for pk, sha, blob in rows:
        by_article.setdefault(pk, []).append((sha, bytes(blob)))
    matched: dict[ArticlePk, MatchedImage] = {}
    for pk, images in by_article.items():
        vectors = np.frombuffer(b"".join(blob for _, blob in images), dtype="<f4")
        row, score = best_image(query, vectors.reshape(len(images), -1))
        position, url, name = photos[(pk, images[row][0])]
        matched[pk] = MatchedImage(position=position, image_url=url, image=name, score=score)
    return matched
