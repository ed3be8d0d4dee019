"""The article detail endpoint, extended with the article's place in the similarity index."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from catalog.api.articles import ArticleDetailApi, article_url
from catalog.models import Article
from similarity.errors import ArticleNotFound, IndexNotReady
from similarity.selectors.store import get_store


class IndexedArticleDetailApi(ArticleDetailApi):
    """GET /api/articles/<article_id>/ — one article, its image state and whether it is indexed."""

    @extend_schema_serializer(component_name="ArticleDetail")
    class OutputSerializer(ArticleDetailApi.OutputSerializer):
        indexed = serializers.BooleanField(
            allow_null=True, help_text="In the current index; null when no index is built yet."
        )
        similar_url = serializers.URLField(
            allow_null=True,
            help_text="null for an id no URL can carry (stored before the import refused it).",
        )

    def not_found(self, article_id: str) -> Exception:
        return ArticleNotFound(article_id)

    def extra_fields(self, request: Request, article: Article) -> dict[str, Any]:
        try:
            indexed: bool | None = get_store().get().contains(article.pk)
        except IndexNotReady:
            indexed = None
        similar = article_url(request, "api:article-similar", article.article_id)
        return {"indexed": indexed, "similar_url": similar}

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request, article_id: str) -> Response:
        return super().get(request, article_id)
