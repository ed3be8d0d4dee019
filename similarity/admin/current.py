"""Admin for the published build: the one CurrentIndex row, read-only (publishing writes it)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from similarity.models import CurrentIndex


@admin.register(CurrentIndex)
class CurrentIndexAdmin(admin.ModelAdmin):
    """Which build every web node should serve, since when, and which build record made it."""

    list_display = ("build_name", "published_at", "build")
    readonly_fields = ("build_name", "published_at", "build")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CurrentIndex | None = None) -> bool:
        return False
