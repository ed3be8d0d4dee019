"""Article (one catalog entry and its primary image) and ArticleImage (its other photos)."""

from __future__ import annotations

import hashlib
import re
from typing import TypeAlias
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models

# Two ids of an article, never to be mixed up: the shop's id (``Article.article_id``, what
# feeds, URLs, reports and decisions carry) and the database primary key (``Article.pk``, what
# the index, embeddings and stored neighbors hold). A foreign key's ``<name>_id`` attribute
# (``Embedding.article_id``) is a primary key: name such values ``..._pk`` in code.
ArticleId: TypeAlias = str
ArticlePk: TypeAlias = int

# Control characters (C0 with tab and newlines, DEL, C1): no URL route can hold them.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
# Routes below an article (/api/articles/<id>/similar/); an id ending so would be read as one.
RESERVED_ID_SUFFIXES = ("/similar", "/duplicates")

MSG_ID_CONTROL = "article_id {article_id!r} contains a control character"
MSG_ID_DOT_SEGMENT = 'article_id {article_id!r} has a "." or ".." path segment'
MSG_ID_RESERVED = "article_id {article_id!r} ends in {suffix!r}, which is an API route"


def article_id_problem(article_id: str) -> str | None:
    """Why ``article_id`` cannot be an article's id in API URLs, or None when it can.

    Ids may hold "/" and any printable character; not control characters (no route matches
    them), "." or ".." segments (clients normalise them away: "a/../b" is "b"), nor a suffix
    that names a route below an article.
    """
    if _CONTROL_CHARACTERS.search(article_id):
        return MSG_ID_CONTROL.format(article_id=article_id)
    if any(segment in {".", ".."} for segment in article_id.split("/")):
        return MSG_ID_DOT_SEGMENT.format(article_id=article_id)
    for suffix in RESERVED_ID_SUFFIXES:
        if article_id.endswith(suffix):
            return MSG_ID_RESERVED.format(article_id=article_id, suffix=suffix)
    return None


# ASCII characters RFC 3986 allows nowhere in a URI; a backslash is the dangerous one.
URL_NOT_URI = "not_uri"  # the ValidationError code of the checks below
_URL_UNSAFE = frozenset('\\"<>^`{|}')


class HttpUrlValidator(URLValidator):
    """Absolute http(s) URLs that also satisfy OpenAPI's ``format: uri`` (RFC 3986).

    Django's URLValidator lets through a backslash ("http://host\\@example.com/", which
    browsers and servers read differently), other characters RFC 3986 excludes and
    user:password@ info; image URLs need none of them.
    """

    def __call__(self, value: object) -> None:
        text = str(value)
        unsafe = sorted(set(text) & _URL_UNSAFE)
        if unsafe:
            raise ValidationError(
                f"a URL cannot contain {''.join(unsafe)!r} (percent-encode it)", code=URL_NOT_URI
            )
        super().__call__(value)
        if "@" in urlsplit(text).netloc:
            raise ValidationError("a URL cannot contain user:password@", code=URL_NOT_URI)


# Image URLs must be absolute http(s): the downloader fetches nothing else.
http_url_validator = HttpUrlValidator(schemes=["http", "https"])


def article_image_path(article_id: str, extension: str, position: int = 0) -> str:
    """Storage path for an article's image, derived from its id (and, for its additional
    images, their position), never from the URL. Position 0 is the primary image; the key of
    the others holds a NUL, which no article id can contain, so no two paths collide."""
    key = article_id if position == 0 else f"{article_id}\0{position}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"images/{digest[:2]}/{digest[:32]}.{extension}"


class Article(models.Model):
    class DownloadStatus(models.TextChoices):
        PENDING = "pending", "Pending"
        DOWNLOADED = "downloaded", "Downloaded"
        FAILED = "failed", "Failed"

    article_id = models.CharField(max_length=255, unique=True, help_text="The shop's own id.")
    title = models.CharField(max_length=1000, blank=True)
    category = models.CharField(max_length=255, blank=True, db_index=True)
    image_url = models.URLField(max_length=2048)
    image = models.FileField(max_length=255, blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    # The URL the stored file came from: a changed image_url makes the file stale.
    downloaded_url = models.URLField(max_length=2048, blank=True)
    download_status = models.CharField(
        max_length=16,
        choices=DownloadStatus.choices,
        default=DownloadStatus.PENDING,
        db_index=True,
    )
    download_error = models.TextField(blank=True)
    # A re-download of an unchanged URL that failed: the previous image is kept (the article
    # stays downloaded and searchable) and the failure is recorded here instead.
    refresh_error = models.TextField(blank=True)
    refresh_failed_at = models.DateTimeField(null=True, blank=True)
    download_attempts = models.PositiveIntegerField(default=0)
    downloaded_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True, db_index=True)
    # Variants of one product (colours, sizes) share it: Google's item_group_id, Shopify's
    # Handle. Results can be collapsed to one answer per group.
    item_group_id = models.CharField(max_length=255, blank=True, db_index=True)
    # As the feed says it ("in stock", "out of stock", "preorder", "backorder"; lower case).
    availability = models.CharField(max_length=32, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["article_id"]

    def __str__(self) -> str:
        return f"{self.article_id} {self.title}".strip()

    @property
    def has_image(self) -> bool:
        return self.download_status == self.DownloadStatus.DOWNLOADED and bool(self.image)


OUT_OF_STOCK = "out of stock"


class ArticleImage(models.Model):
    """An additional photo of an article (position 1, 2, ...), downloaded and embedded like
    the primary one, which stays on the Article (position 0): every reader of the primary
    image (thumbnails, search results, matching) is unchanged, and a database from before
    additional images needed no data moved."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveSmallIntegerField()
    url = models.URLField(max_length=2048)
    image = models.FileField(max_length=255, blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    downloaded_url = models.URLField(max_length=2048, blank=True)
    download_status = models.CharField(
        max_length=16,
        choices=Article.DownloadStatus.choices,
        default=Article.DownloadStatus.PENDING,
        db_index=True,
    )
    download_error = models.TextField(blank=True)
    download_attempts = models.PositiveIntegerField(default=0)
    downloaded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["article", "position"]
        constraints = [
            models.UniqueConstraint(fields=["article", "position"], name="articleimage_position"),
            models.CheckConstraint(
                condition=models.Q(position__gte=1), name="articleimage_not_primary"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.article_id} #{self.position}"

    @property
    def has_image(self) -> bool:
        return self.download_status == Article.DownloadStatus.DOWNLOADED and bool(self.image)
