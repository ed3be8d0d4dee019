"""Article admin with similarity: "Similar items" and "Duplicates" panels, download/rebuild."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from catalog.admin import ArticleAdmin
from catalog.models import Article
from catalog.services.download_queue import images_download_enqueue
from similarity.admin.duplicates import HELP_KEEP, HELP_SPLIT, confirm_keep_url
from similarity.errors import (
    ArticleNotFound,
    ArticleNotIndexed,
    IndexNotReady,
    SimilarityError,
    TaskQueueUnavailable,
)
from similarity.selectors.duplicates import article_duplicates_find
from similarity.selectors.search import similar_to_article
from similarity.services.builds.queue import index_build_enqueue

logger = logging.getLogger(__name__)

SIMILAR_K = 12
# Ids carried in one queued task; for more, the background rebuild downloads everything.
MAX_ACTION_DOWNLOADS = 500

MSG_NO_INDEX = (
    "No similarity index has been built yet. Use the “Rebuild the similarity index” action "
    "on the article list, or run manage.py build_index."
)
MSG_NOT_INDEXED = "This article is not in the similarity index yet: {reason}."
MSG_NOT_FOUND = "This article is unknown to the similarity index ({error})."
MSG_PANEL_ERROR = "Similar items could not be loaded: {error}"
MSG_NO_RESULTS = "The index holds no other active article."
MSG_DOWNLOAD_QUEUED = (
    "Downloading the images of {count} selected article(s) in the background{retry}. Their "
    "download status shows the outcome; Background tasks > Successful tasks holds the summary."
)
MSG_RETRY = " (previously failed ones included)"
MSG_TOO_MANY = (
    "{count} articles selected; at most {limit} can be downloaded from the admin at once. "
    "Use “Rebuild the similarity index”, which downloads in the background."
)
MSG_BUILD_QUEUED = "Index build {link} queued (model {model}); it runs in the background."
MSG_BUILD_JOINED = (
    "A rebuild was already queued: your request joined index build {link} (model {model}); "
    "it runs in the background."
)


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


@dataclass(frozen=True)
class DuplicatesPanel:
    rows: list[tuple[SimilarItem, str]] = field(default_factory=list)  # (item, kept or "")
    message: str = ""
    threshold: float = 0.0
    not_duplicates: int = 0
    deactivated: list[str] = field(default_factory=list)
    keep_url: str = ""
    review_url: str = ""
    help_keep: str = HELP_KEEP
    help_split: str = HELP_SPLIT


def duplicates_panel(article: Article, *, back: str = "") -> DuplicatesPanel | None:
    """The "Duplicates of this article" panel; None when the similar panel already says why
    there is nothing (no index, not indexed)."""
    try:
        found = article_duplicates_find(article_id=article.article_id)
    except SimilarityError:
        return None
    except Exception:
        logger.exception("Duplicates panel failed for article %s", article.article_id)
        return None
    items = [
        SimilarItem(
            article_id=d.member.article_id, title=d.member.title, category=d.member.category,
            change_url=reverse("admin:catalog_article_change", args=[d.member.pk]),
            thumbnail_url=default_storage.url(d.member.image) if d.member.image else "",
            distance=d.distance, score=1.0 - d.distance,
        )
        for d in found.duplicates
    ]
    ids = [article.article_id, *(item.article_id for item in items)]
    return DuplicatesPanel(
        rows=[(item, d.kept) for item, d in zip(items, found.duplicates, strict=True)],
        message="" if items else "No other active article is within the duplicate threshold.",
        threshold=found.threshold,
        not_duplicates=found.not_duplicates,
        deactivated=found.deactivated,
        keep_url=confirm_keep_url(kept=article.article_id, article_ids=ids, next_url=back)
        if items else "",
        review_url=reverse("admin:similarity_duplicategroupreview_changelist"),
    )


admin.site.unregister(Article)


@admin.register(Article)
class ArticleSimilarityAdmin(ArticleAdmin):
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
            context["duplicates_panel"] = duplicates_panel(obj, back=request.get_full_path())
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
        try:
            queued = index_build_enqueue(trigger="admin")
        except TaskQueueUnavailable as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        build = queued.build
        link = format_html(
            '<a href="{}">#{}</a>',
            reverse("admin:similarity_indexbuild_change", args=[build.pk]),
            build.pk,
        )
        self.message_user(
            request,
            format_html(
                MSG_BUILD_JOINED if queued.joined else MSG_BUILD_QUEUED,
                link=link,
                model=build.model,
            ),
            messages.SUCCESS,
        )

    def _download(
        self, request: HttpRequest, queryset: QuerySet[Article], *, only_failed: bool
    ) -> None:
        # Queued, never run here: one slow image server would outlast the worker timeout.
        article_ids = list(queryset.values_list("article_id", flat=True))
        if len(article_ids) > MAX_ACTION_DOWNLOADS:
            self.message_user(
                request,
                MSG_TOO_MANY.format(count=len(article_ids), limit=MAX_ACTION_DOWNLOADS),
                messages.ERROR,
            )
            return
        images_download_enqueue(article_ids=article_ids, only_failed=only_failed)
        self.message_user(
            request,
            MSG_DOWNLOAD_QUEUED.format(
                count=len(article_ids), retry=MSG_RETRY if only_failed else ""
            ),
            messages.SUCCESS,
        )
