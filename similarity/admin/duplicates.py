"""Admin "Duplicate groups" review page and the history of reviewers' duplicate decisions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from similarity.errors import IndexNotReady, InvalidQuery
from similarity.models import DuplicateDecision, DuplicateGroupReview
from similarity.services.duplicates import duplicate_decision_record, duplicate_groups_find

GROUPS_PER_PAGE = 20


@admin.register(DuplicateDecision)
class DuplicateDecisionAdmin(admin.ModelAdmin):
    """Decisions are made on the review page; here they can be read, or deleted to undo."""

    list_display = ("article_a", "article_b", "verdict", "kept", "decided_by", "decided_at")
    list_filter = ("verdict",)
    search_fields = ("article_a", "article_b")
    readonly_fields = [field.name for field in DuplicateDecision._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DuplicateGroupReview)
class DuplicateGroupReviewAdmin(admin.ModelAdmin):
    """The changelist is the review page: groups with thumbnails, distances and verdict buttons."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        # Only the review page: Django's default change/delete views would let a staff user
        # edit a decision's pair or verdict behind the review workflow's back.
        from django.urls import path

        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.changelist_view)
        return [path("", view, name="{}_{}_changelist".format(*info))]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self._decide(request)
        threshold = request.GET.get("threshold") or None
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Duplicate groups",
            "threshold": threshold or "",
            "can_decide": self.has_change_permission(request),
        }
        try:
            report = duplicate_groups_find(threshold=threshold)
        except (IndexNotReady, InvalidQuery) as exc:
            context["error"] = str(exc)
            return TemplateResponse(request, "admin/similarity/duplicates.html", context)
        page = Paginator(report.groups, GROUPS_PER_PAGE).get_page(request.GET.get("page"))
        context.update(report=report, page=page, groups=[_group_view(g) for g in page])
        return TemplateResponse(request, "admin/similarity/duplicates.html", context)

    def _decide(self, request: HttpRequest) -> HttpResponse:
        back = request.get_full_path()
        if not self.has_change_permission(request):
            messages.error(request, "You may not record duplicate decisions.")
            return HttpResponseRedirect(back)
        article_ids = request.POST.getlist("article_ids")
        decision = request.POST.get("decision", "")
        kept = decision.removeprefix("keep:") if decision.startswith("keep:") else ""
        verdict = (
            DuplicateDecision.Verdict.DUPLICATE if kept else DuplicateDecision.Verdict.NOT_DUPLICATE
        )
        try:
            pairs = duplicate_decision_record(
                article_ids=article_ids, verdict=verdict, kept=kept,
                decided_by=request.user.get_username(),
            )
        except InvalidQuery as exc:
            messages.error(request, str(exc))
        else:
            what = f"kept {kept}" if kept else "not duplicates"
            messages.success(request, f"Recorded {what} for {len(set(article_ids))} articles "
                                      f"({pairs} pairs); the group will not come back.")
        return HttpResponseRedirect(back)


def _group_view(group: Any) -> dict[str, Any]:
    return {
        "group": group,
        "members": [
            {
                "member": member,
                "thumbnail_url": default_storage.url(member.image) if member.image else "",
                "change_url": reverse("admin:catalog_article_change", args=[member.pk]),
            }
            for member in group.members
        ],
    }
