"""Catalog reads: article lists and lookups."""

from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import Article

ARTICLE_LIST_FIELDS = (
    "pk",
    "article_id",
    "title",
    "category",
    "image_url",
    "image",
    "download_status",
    "is_active",
)


def article_list(*, filters: dict[str, object]) -> QuerySet[Article]:
    """Articles in id order, filtered by category, download status and active flag."""
    queryset = Article.objects.only(*ARTICLE_LIST_FIELDS).order_by("article_id")
    if filters.get("category") is not None:
        queryset = queryset.filter(category=filters["category"])
    if filters.get("status"):
        queryset = queryset.filter(download_status=filters["status"])
    if filters.get("is_active") is not None:
        queryset = queryset.filter(is_active=filters["is_active"])
    return queryset


def article_get(*, article_id: str) -> Article | None:
    """The article with the shop's ``article_id``, or None."""
    return Article.objects.filter(article_id=article_id).first()
