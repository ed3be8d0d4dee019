"""Admin for similarity: the "Similar items" panel and actions on articles, index build history."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from catalog.admin import ArticleAdmin
from catalog.models import Article
from catalog.services.downloads import images_download
from similarity.errors import ArticleNotFound, ArticleNotIndexed, IndexNotReady, SimilarityError
from similarity.models import IndexBuild
from similarity.selectors import similar_to_article
from similarity.services.builds import index_build_enqueue

logger = logging.getLogger(__name__)

SIMILAR_K = 12
MAX_SYNC_DOWNLOADS = 500  # more than this in one request: use the background rebuild instead
FAILURES_SHOWN = 50

MSG_NO_INDEX = (
    "No similarity index has been built yet. Use the “Rebuild the similarity index” action "
    "on the article list, or run manage.py build_index."
)
MSG_NOT_INDEXED = "This article is not in the similarity index yet: {reason}."
MSG_NOT_FOUND = "This article is unknown to the similarity index ({error})."
MSG_PANEL_ERROR = "Similar items could not be loaded: {error}"
MSG_NO_RESULTS = "The index holds no other active article."
MSG_DOWNLOADED = "Images of {count} selected article(s): {summary}."
MSG_DOWNLOAD_FAILURES = "Failed: {failures}"
MSG_NOT_RETRIED = (
    "{count} selected article(s) whose download failed before were not retried; "
    "use “Retry failed downloads of selected articles”."
)
MSG_TOO_MANY = (
    "{count} articles selected; at most {limit} can be downloaded from the admin at once. "
    "Use “Rebuild the similarity index”, which downloads in the background."
)
MSG_BUILD_QUEUED = "Index build {link} queued (model {model}); it runs in the background."


@dataclass(frozen=True)
class SimilarItem:
    """One entry of the panel, ready for the template."""

    article_id: str
    title: str
    category: str
    change_url: str
    thumbnail_url: str  # "" when the article has no downloaded image
    distance: float
    score: float


@dataclass(frozen=True)
class SimilarPanel:
    items: list[SimilarItem] = field(default_factory=list)
    message: str = ""
    level: str = "info"  # "info" or "warning": how the message is shown
    model: str = ""
    index_build: str = ""


def similar_panel(article: Article, *, k: int = SIMILAR_K) -> SimilarPanel:
    """The "Similar items" panel for one article, or the reason there is none.

    The selector hydrates all results in one query; thumbnails are storage URLs, so the
    panel costs a fixed number of queries whatever ``k`` is.
    """
    try:
        result = similar_to_article(article_id=article.article_id, k=k, exclude_self=True)
    except IndexNotReady:
        return SimilarPanel(message=MSG_NO_INDEX)
    except ArticleNotIndexed as exc:
        return SimilarPanel(message=MSG_NOT_INDEXED.format(reason=exc.reason), level="warning")
    except ArticleNotFound as exc:
        return SimilarPanel(message=MSG_NOT_FOUND.format(error=exc), level="warning")
    except SimilarityError as exc:
        return SimilarPanel(message=MSG_PANEL_ERROR.format(error=exc), level="warning")
    except Exception as exc:
        # The panel is an aid: a broken index must not make the article uneditable.
        logger.exception("Similar items panel failed for article %s", article.article_id)
        return SimilarPanel(message=MSG_PANEL_ERROR.format(error=exc), level="warning")
    items = [
        SimilarItem(
            article_id=row.article_id,
            title=row.title,
            category=row.category,
            change_url=reverse("admin:catalog_article_change", args=[row.pk]),
            thumbnail_url=default_storage.url(row.image) if row.image else "",
            distance=row.distance,
            score=row.score,
        )
        for row in result.results
    ]
    return SimilarPanel(
        items=items,
        message="" if items else MSG_NO_RESULTS,
        model=result.model,
        index_build=result.index_build,
    )


admin.site.unregister(Article)


@admin.register(Article)
class SimilarArticleAdmin(ArticleAdmin):
    """The catalog's article admin plus the "Similar items" panel and similarity actions."""

    change_form_template = "admin/catalog/article/change_form_similar.html"
    actions = ("download_images", "retry_failed_downloads", "rebuild_index")
    similar_k = SIMILAR_K

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Article | None = None,
    ) -> HttpResponse:
        if obj is not None and not add:
            context["similar_panel"] = similar_panel(obj, k=self.similar_k)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Download selected images", permissions=["change"])
    def download_images(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        self._download(request, queryset, only_failed=False)

    @admin.action(description="Retry failed downloads of selected articles", permissions=["change"])
    def retry_failed_downloads(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        self._download(request, queryset, only_failed=True)

    @admin.action(
        description="Rebuild the similarity index (whole catalog)", permissions=["change"]
    )
    def rebuild_index(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        build = index_build_enqueue(trigger="admin")
        link = format_html(
            '<a href="{}">#{}</a>',
            reverse("admin:similarity_indexbuild_change", args=[build.pk]),
            build.pk,
        )
        self.message_user(
            request,
            format_html(MSG_BUILD_QUEUED, link=link, model=build.model),
            messages.SUCCESS,
        )

    def _download(
        self, request: HttpRequest, queryset: QuerySet[Article], *, only_failed: bool
    ) -> None:
        article_ids = list(queryset.values_list("article_id", flat=True))
        if len(article_ids) > MAX_SYNC_DOWNLOADS:
            self.message_user(
                request,
                MSG_TOO_MANY.format(count=len(article_ids), limit=MAX_SYNC_DOWNLOADS),
                messages.ERROR,
            )
            return
        summary = images_download(
            article_ids=article_ids, only_failed=only_failed, progress=False
        )
        self.message_user(
            request,
            MSG_DOWNLOADED.format(count=len(article_ids), summary=summary),
            messages.WARNING if summary.failed else messages.SUCCESS,
        )
        if summary.failures:
            failures = "; ".join(f"{aid}: {reason}" for aid, reason in summary.failures[:10])
            more = len(summary.failures) - 10
            suffix = f" (and {more} more)" if more > 0 else ""
            self.message_user(
                request, MSG_DOWNLOAD_FAILURES.format(failures=failures + suffix), messages.ERROR
            )
        if summary.not_retried:
            self.message_user(
                request, MSG_NOT_RETRIED.format(count=summary.not_retried), messages.INFO
            )


STATUS_COLOURS = {
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
    fieldsets = (
        (None, {"fields": ("status_badge", "error", "trigger", "task_link")}),
        ("Options", {"fields": ("model", "index_type", "full", "download")}),
        ("Result", {"fields": IndexBuild.RESULT_FIELDS}),
        (
            "Timings",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "heartbeat_at",
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
from similarity import admin_duplicates  # noqa: E402,F401
