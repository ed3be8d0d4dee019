"""Admin for index builds (read-only history)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from similarity.models import IndexBuild


@admin.register(IndexBuild)
class IndexBuildAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "mode",
        "model",
        "index_type",
        "article_count",
        "embedded_count",
        "reused_count",
        "failed_count",
        "duration_display",
        "created_at",
    )
    list_filter = ("status", "model", "trigger")
    readonly_fields = [field.name for field in IndexBuild._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: IndexBuild | None = None) -> bool:
        return False

    @admin.display(description="Duration")
    def duration_display(self, build: IndexBuild) -> str:
        seconds = build.duration
        return "—" if seconds is None else f"{seconds:.1f} s"
