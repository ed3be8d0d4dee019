"""The catalog's API routes; the project mounts them under /api/ (namespace "api")."""

from __future__ import annotations

from django.urls import URLPattern, path, register_converter
from django.urls.converters import PathConverter

from catalog.api.articles import ArticleDetailApi, ArticleListApi


class ArticleIdConverter(PathConverter):
    """Any characters, "/" included, except NUL: PostgreSQL text cannot hold it, so such a
    path matches no article route and answers the API's JSON 404 on every database."""

    regex = "[^\x00]+"


register_converter(ArticleIdConverter, "article_id")


def article_patterns(detail_view: type[ArticleDetailApi] = ArticleDetailApi) -> list[URLPattern]:
    """Article list and detail; ``detail_view`` lets an app extend the detail answer.

    Article ids may hold any character but NUL, "/" included: routes below an article
    (".../similar/") must be listed before these.
    """
    return [
        path("articles/", ArticleListApi.as_view(), name="article-list"),
        path("articles/<article_id:article_id>/", detail_view.as_view(), name="article-detail"),
    ]
