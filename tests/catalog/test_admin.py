"""Article admin: list, search, filters and change page render for a staff user."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Article, ArticleImage
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


def test_change_page_shows_the_gallery_and_variant_fields(admin_client):
    article = ArticleFactory(item_group_id="SHIRT", availability="out of stock")
    ArticleImage.objects.create(article=article, position=1, url="https://cdn.example.com/b.jpg")
    ArticleImage.objects.create(
        article=article, position=2, url="https://cdn.example.com/c.jpg", image="images/c.jpg",
        download_status=Article.DownloadStatus.DOWNLOADED,
    )
    response = admin_client.get(reverse("admin:catalog_article_change", args=[article.pk]))
    content = response.content.decode()
    assert response.status_code == 200 and "Gallery (additional photos" in content
    assert "https://cdn.example.com/b.jpg" in content and 'src="/media/images/c.jpg"' in content
    assert "SHIRT" in content and "out of stock" in content


def change_form(article: Article, **changes: object) -> dict[str, object]:
    """The POST data of the article's change page, with ``changes`` applied."""
    data = {
        "article_id": article.article_id,
        "title": article.title,
        "category": article.category,
        "image_url": article.image_url,
        "is_active": "on" if article.is_active else "",
        "metadata": "{}",
        # The gallery inline's management form (read-only: no forms of its own).
        "images-TOTAL_FORMS": "0",
        "images-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return data


def downloaded_article() -> Article:
    return ArticleFactory(
        image_url="https://cdn.example.com/old.jpg",
        downloaded_url="https://cdn.example.com/old.jpg",
        image="images/ab/old.jpg",
        download_status=Article.DownloadStatus.FAILED,
        download_error="HTTP 503 Service Unavailable",
        download_attempts=3,
    )


def test_changing_image_url_queues_a_new_download(admin_client):
    article = downloaded_article()
    url = reverse("admin:catalog_article_change", args=[article.pk])

    response = admin_client.post(url, change_form(article, image_url="https://cdn.example.com/new.jpg"))

    assert response.status_code == 302
    article.refresh_from_db()
    assert article.image_url == "https://cdn.example.com/new.jpg"
    assert (article.download_status, article.download_error, article.download_attempts) == (
        Article.DownloadStatus.PENDING, "", 0
    )
    assert article.image.name == "images/ab/old.jpg"  # kept until a new download replaces it


def test_editing_other_fields_keeps_the_download_status(admin_client):
    article = downloaded_article()
    url = reverse("admin:catalog_article_change", args=[article.pk])

    response = admin_client.post(url, change_form(article, title="Renamed"))

    assert response.status_code == 302
    article.refresh_from_db()
    assert article.title == "Renamed"
    assert (article.download_status, article.download_attempts) == (
        Article.DownloadStatus.FAILED, 3
    )


def test_image_url_must_be_http_or_https(admin_client):
    article = downloaded_article()
    url = reverse("admin:catalog_article_change", args=[article.pk])

    response = admin_client.post(url, change_form(article, image_url="ftp://cdn.example.com/a.jpg"))

    assert response.status_code == 200  # the form again, with the error
    assert b"Enter a valid URL." in response.content
    article.refresh_from_db()
    assert article.image_url == "https://cdn.example.com/old.jpg"
