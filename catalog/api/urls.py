"""The catalog's API routes; the project mounts them under /api/ (namespace "api")."""

from __future__ import annotations

from django.urls import URLPattern, path

from catalog.api.articles import ArticleDetailApi, ArticleListApi


def article_patterns(detail_view: type[ArticleDetailApi] = ArticleDetailApi) -> list[URLPattern]:
    """Article list and detail; ``detail_view`` lets an app extend the detail answer.

    Article ids may hold any character, "/" included (<path:>): routes below an article
    (".../similar/") must be listed before these. Ids no article can have (a NUL, which
    PostgreSQL text cannot hold) are answered 404 by the views without a query.
    """
    return [
        path("articles/", ArticleListApi.as_view(), name="article-list"),
        path("articles/<path:article_id>/", detail_view.as_view(), name="article-detail"),
    ]
