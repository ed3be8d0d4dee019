"""Admin for index builds: the read-only history of builds with their timings and failures."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from catalog.models import Article
from similarity.models import BuildShard, IndexBuild

FAILURES_SHOWN = 50

STATUS_COLOURS: dict[str, str] = {
    IndexBuild.Status.QUEUED: "#777",
    IndexBuild.Status.RUNNING: "#205067",
    IndexBuild.Status.SUCCEEDED: "#2e7d32",
    IndexBuild.Status.UNCHANGED: "#2e7d32",
    IndexBuild.Status.FAILED: "#ba2121",
    IndexBuild.Status.SKIPPED: "#b26a00",
}
TABLE_STYLE = "border-collapse:collapse;min-width:20em"


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _timing_value(name: str, value: Any) -> str:
    if isinstance(value, float) and name.endswith("seconds"):
        return f"{value:.3f} s"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class BuildShardInline(admin.TabularInline):
    """A distributed build's shards: read-only, the workers write them."""

    model = BuildShard
    extra = 0
    can_delete = False
    show_change_link = False
    fields = (
        "kind", "first_pk", "last_pk", "article_count", "state", "worker", "device",
        "attempts", "lease_expires_at", "started_at", "duration_display", "done_count",
        "reused_count", "failed_count", "error",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Duration")
    def duration_display(self, shard: BuildShard) -> str:
        return "" if shard.duration is None else f"{shard.duration:.1f} s"


@admin.register(IndexBuild)
class IndexBuildAdmin(admin.ModelAdmin):
    """Read-only history of builds: the system creates them, the admin only shows them."""

    list_display = (
        "id",
        "status_badge",
        "trigger",
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
    list_display_links = ("id", "status_badge")
    list_filter = ("status", "model", "trigger", "mode")
    date_hierarchy = "created_at"
    inlines = (BuildShardInline,)
    fieldsets = (
        (None, {"fields": ("status_badge", "error", "trigger", "task_link")}),
        ("Options", {"fields": ("model", "model_source", "index_type", "full", "download")}),
        ("Result", {"fields": IndexBuild.SUMMARY_FIELDS}),
        (
            "Timings",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "heartbeat_at",
                    "progress_at",
                    "phase",
                    "process",
                    "finished_at",
                    "duration_display",
                    "timings_table",
                )
            },
        ),
        ("Failures", {"fields": ("failures_table",)}),
        ("Manifest", {"fields": ("manifest_json",), "classes": ("collapse",)}),
    )
    readonly_fields = (
        *(f.name for f in IndexBuild._meta.fields),
        "status_badge",
        "task_link",
        "duration_display",
        "timings_table",
        "failures_table",
        "manifest_json",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: IndexBuild | None = None) -> bool:
        return False

    @admin.display(description="Status", ordering="status")
    def status_badge(self, build: IndexBuild) -> str:
        return format_html(
            '<strong style="color:{}">{}</strong>',
            STATUS_COLOURS.get(build.status, "inherit"),
            build.get_status_display(),
        )

    @admin.display(description="Duration")
    def duration_display(self, build: IndexBuild) -> str:
        seconds = build.duration
        return "—" if seconds is None else f"{seconds:.1f} s"

    @admin.display(description="Background task")
    def task_link(self, build: IndexBuild) -> str:
        if not build.task_id:
            return "—"
        from django_q.models import Task

        task = Task.objects.filter(id=build.task_id).only("id", "success").first()
        if task is None:  # queued or running: django-q2 records a task when it finishes
            return format_html("{} (not finished)", build.task_id)
        view = "success" if task.success else "failure"
        return format_html(
            '<a href="{}">{}</a> ({})',
            reverse(f"admin:django_q_{view}_change", args=[task.pk]),
            build.task_id,
            view,
        )

    @admin.display(description="Phase timings")
    def timings_table(self, build: IndexBuild) -> str:
        rows = _flatten(build.timings or {})
        if not rows:
            return "—"
        body = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td style="text-align:right">{}</td></tr>',
            ((name, _timing_value(name, value)) for name, value in rows),
        )
        return format_html('<table style="{}"><tbody>{}</tbody></table>', TABLE_STYLE, body)

    @admin.display(description="Failed images")
    def failures_table(self, build: IndexBuild) -> str:
        failures = [f for f in (build.failures or []) if isinstance(f, dict)]
        if not failures:
            return "—"
        shown = failures[:FAILURES_SHOWN]
        pks = Article.objects.only("pk", "article_id").in_bulk(
            [str(f.get("article_id", "")) for f in shown], field_name="article_id"
        )

        def article_cell(article_id: str) -> str:
            article = pks.get(article_id)
            if article is None:
                return article_id
            url = reverse("admin:catalog_article_change", args=[article.pk])
            return format_html('<a href="{}">{}</a>', url, article_id)

        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td></tr>",
            (
                (article_cell(str(f.get("article_id", ""))), f.get("reason", ""))
                for f in shown
            ),
        )
        more = len(failures) - len(shown)
        note = format_html("<p>… and {} more</p>", more) if more > 0 else ""
        return format_html(
            '<table style="{}"><thead><tr><th>Article</th><th>Reason</th></tr></thead>'
            "<tbody>{}</tbody></table>{}",
            TABLE_STYLE,
            body,
            note,
        )

    @admin.display(description="Manifest")
    def manifest_json(self, build: IndexBuild) -> str:
        if not build.manifest:
            return "—"
        text = json.dumps(build.manifest, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre style="white-space:pre-wrap;margin:0">{}</pre>', text)
