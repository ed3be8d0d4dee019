"""Article admin: list, search, filters and change page render for a staff user."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Article
from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db


def test_changelist_search_and_filters(admin_client):
    ArticleFactory(article_id="BAG-1", title="Red bag", category="bags")
    ArticleFactory(
        article_id="SHOE-1",
        title="Green shoe",
        category="shoes",
        download_status=Article.DownloadStatus.DOWNLOADED,
        image="images/ab/shoe.jpg",
    )
    url = reverse("admin:catalog_article_changelist")
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b"BAG-1" in response.content and b"SHOE-1" in response.content
    assert b'src="/media/images/ab/shoe.jpg"' in response.content

    response = admin_client.get(url, {"q": "green"})
    assert b"SHOE-1" in response.content and b"BAG-1" not in response.content

    response = admin_client.get(url, {"download_status__exact": "pending"})
    assert b"BAG-1" in response.content and b"SHOE-1" not in response.content

    response = admin_client.get(url, {"category": "shoes"})
    assert b"SHOE-1" in response.content and b"BAG-1" not in response.content


def test_change_page_renders(admin_client):
    article = ArticleFactory(download_error="HTTP 404 Not Found")
    response = admin_client.get(reverse("admin:catalog_article_change", args=[article.pk]))
    assert response.status_code == 200
    assert b"HTTP 404 Not Found" in response.content
