"""Admin for articles: thumbnails, download status, search and filters."""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.utils.html import format_html

from catalog.models import Article, ArticleImage, http_url_validator
from catalog.services.imports import article_image_url_change

THUMBNAIL_HTML = (
    '<img src="{}" alt="{}" loading="lazy" '
    'style="max-width:{}px;max-height:{}px;object-fit:contain;background:#fff">'
)


def thumbnail_html(article: Article, size: int = 80) -> str:
    """An <img> for the article's downloaded image, or an em dash when there is none."""
    if not article.image:
        return "—"
    return format_html(THUMBNAIL_HTML, article.image.url, article.article_id, size, size)


class ArticleImageInline(admin.TabularInline):
    """The article's gallery: its additional photos, read-only (the import writes them)."""

    model = ArticleImage
    verbose_name = "additional photo"
    verbose_name_plural = "Gallery (additional photos; the primary one is above)"
    fields = ("position", "photo", "url", "download_status", "download_error", "image_sha256")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("position",)

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    @admin.display(description="photo")
    def photo(self, image: ArticleImage) -> str:
        if not image.has_image:
            return "—"
        return format_html(THUMBNAIL_HTML, image.image.url, image.url, 120, 120)


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail",
        "article_id",
        "title",
        "category",
        "download_status",
        "is_active",
        "updated_at",
    )
    list_display_links = ("thumbnail", "article_id")
    list_filter = ("download_status", "is_active", "availability", "category")
    inlines = (ArticleImageInline,)
    search_fields = ("article_id", "title")
    list_per_page = 50
    # The model's URLField would also accept ftp://, which the downloader cannot fetch.
    formfield_overrides = {
        models.URLField: {"assume_scheme": "https", "validators": [http_url_validator]}
    }
    show_full_result_count = False
    readonly_fields = (
        "preview",
        "image",
        "image_sha256",
        "image_width",
        "image_height",
        "downloaded_url",
        "download_status",
        "download_error",
        "refresh_error",
        "refresh_failed_at",
        "download_attempts",
        "downloaded_at",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("article_id", "title", "category", "image_url", "is_active")}),
        ("Variants and stock", {"fields": ("item_group_id", "availability")}),
        ("Image", {"fields": ("preview", "image", "image_sha256", "image_width", "image_height")}),
        (
            "Download",
            {
                "fields": (
                    "download_status",
                    "download_error",
                    "refresh_error",
                    "refresh_failed_at",
                    "download_attempts",
                    "downloaded_url",
                    "downloaded_at",
                )
            },
        ),
        ("Other", {"fields": ("metadata", "created_at", "updated_at")}),
    )

    def save_model(self, request, obj: Article, form, change: bool) -> None:
        if change and "image_url" in form.changed_data:
            article_image_url_change(article=obj)  # as the import does: download it again
        super().save_model(request, obj, form, change)

    @admin.display(description="Image")
    def thumbnail(self, article: Article) -> str:
        return thumbnail_html(article, size=60)

    @admin.display(description="Preview")
    def preview(self, article: Article) -> str:
        return thumbnail_html(article, size=320)
