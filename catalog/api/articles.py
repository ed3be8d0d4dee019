"""Article endpoints: the paginated catalog list and one article's catalog facts."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.urls import NoReverseMatch, reverse
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import Article, article_id_problem
from catalog.selectors import article_get, article_list, public_download_error


class ArticlePagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


def media_url(request: Request, name: str) -> str | None:
    """Absolute URL of a stored image, or None when the article has none."""
    return request.build_absolute_uri(default_storage.url(name)) if name else None


def article_url(request: Request, route: str, article_id: str) -> str | None:
    """Absolute URL of an article route (reverse() quotes the id), or None for an id no URL
    can carry: one stored before the import refused such ids (catalog.models)."""
    if article_id_problem(article_id):
        return None
    try:
        return request.build_absolute_uri(reverse(route, args=[article_id]))
    except NoReverseMatch:
        return None


class ArticleListApi(APIView):
    """GET /api/articles/ — the catalog, paginated (limit/offset), with filters."""

    pagination_class = ArticlePagination  # the schema declares the page envelope and limit/offset
    error_statuses = {"get": (400,)}  # beyond those of every operation (the API's schema)

    class FilterSerializer(serializers.Serializer):
        category = serializers.CharField(required=False, allow_blank=True)
        status = serializers.ChoiceField(choices=Article.DownloadStatus.choices, required=False)
        is_active = serializers.BooleanField(required=False, allow_null=True, default=None)

    @extend_schema_serializer(component_name="ArticleListItem")
    class OutputSerializer(serializers.Serializer):
        article_id = serializers.CharField()
        title = serializers.CharField()
        category = serializers.CharField()
        image_url = serializers.URLField()
        image = serializers.SerializerMethodField()
        download_status = serializers.CharField()
        is_active = serializers.BooleanField()
        url = serializers.SerializerMethodField()

        def get_image(self, article: Article) -> str | None:
            return media_url(self.context["request"], article.image.name or "")

        def get_url(self, article: Article) -> str | None:
            return article_url(self.context["request"], "api:article-detail", article.article_id)

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = article_list(filters=filters.validated_data)
        paginator = ArticlePagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        data = self.OutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


class ArticleDetailApi(APIView):
    """GET /api/articles/<article_id>/ — one article and the state of its image.

    Apps that know more about an article (the similarity index) subclass it and extend
    ``OutputSerializer`` and ``extra_fields``.
    """

    error_statuses = {"get": (404,)}

    @extend_schema_serializer(component_name="ArticleCatalogDetail")
    class OutputSerializer(serializers.Serializer):
        article_id = serializers.CharField()
        title = serializers.CharField()
        category = serializers.CharField()
        image_url = serializers.URLField()
        image = serializers.CharField(allow_null=True)
        image_width = serializers.IntegerField(allow_null=True)
        image_height = serializers.IntegerField(allow_null=True)
        download_status = serializers.CharField()
        download_error = serializers.CharField(
            help_text='Why the download failed; "download failed" for anonymous clients.'
        )
        refresh_error = serializers.CharField(
            help_text="Why the last refresh failed while the previous image was kept "
            '(the article stays searchable); "download failed" for anonymous clients.'
        )
        is_active = serializers.BooleanField()

    def not_found(self, article_id: str) -> Exception:
        return exceptions.NotFound(f"unknown article {article_id!r}", code="article_not_found")

    def extra_fields(self, request: Request, article: Article) -> dict[str, Any]:
        return {}

    def get(self, request: Request, article_id: str) -> Response:
        article = article_get(article_id=article_id)
        if article is None:
            raise self.not_found(article_id)
        data = {
            "article_id": article.article_id,
            "title": article.title,
            "category": article.category,
            "image_url": article.image_url,
            "image": media_url(request, article.image.name or ""),
            "image_width": article.image_width,
            "image_height": article.image_height,
            "download_status": article.download_status,
            "download_error": public_download_error(
                error=article.download_error, user=request.user
            ),
            "refresh_error": public_download_error(error=article.refresh_error, user=request.user),
            "is_active": article.is_active,
            **self.extra_fields(request, article),
        }
        return Response(self.OutputSerializer(data).data)
