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
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from similarity.errors import IndexNotReady, InvalidQuery
from similarity.models import DuplicateDecision, DuplicateGroupReview
from similarity.selectors.duplicates import duplicate_groups_find
from similarity.services.duplicates.decisions import (
    duplicate_decision_record,
    duplicate_keep,
    duplicate_keep_undo,
    duplicate_split,
)

GROUPS_PER_PAGE = 20

# What each button does, shown on the pages (and asserted by tests).
HELP_KEEP = (
    "Keep this one… asks for confirmation, then records the others as duplicates of it and, "
    "if you choose, deactivates them (undo reactivates them)."
)
HELP_SPLIT = (
    "Remove from group records that this article is not a duplicate of the others; it stays "
    "out of this group after rebuilds."
)
HELP_NOT_DUPLICATES = (
    "Not duplicates records that none of these articles duplicates another; the group is hidden."
)
HELP_KEEP_DEACTIVATE = (
    "Records the decision and deactivates the other articles: they leave search results at "
    "once and the index at the next build. Undo (on the kept article's page or here) "
    "reactivates them."
)
HELP_KEEP_ONLY = "Records the decision only: the other articles stay active and searchable."
MSG_KEPT = "Kept {kept} over {count} article(s) ({pairs} pairs recorded){what}."
MSG_UNDONE = "Undid keeping {kept}: {count} decision(s) forgotten, reactivated {reactivated}."
MSG_SPLIT = "{article_id} is recorded as not a duplicate of {others}."


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
        if request.GET.get("confirm_keep"):
            return self._confirm_keep(request)
        threshold = request.GET.get("threshold") or None
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Duplicate groups",
            "threshold": threshold or "",
            "can_decide": self.has_change_permission(request),
            "help": {"keep": HELP_KEEP, "split": HELP_SPLIT, "not": HELP_NOT_DUPLICATES},
        }
        try:
            report = duplicate_groups_find(threshold=threshold)
        except (IndexNotReady, InvalidQuery) as exc:
            context["error"] = str(exc)
            return TemplateResponse(request, "admin/similarity/duplicates.html", context)
        page = Paginator(report.groups, GROUPS_PER_PAGE).get_page(request.GET.get("page"))
        context.update(report=report, page=page, groups=[_group_view(g) for g in page])
        return TemplateResponse(request, "admin/similarity/duplicates.html", context)

    def _confirm_keep(self, request: HttpRequest) -> HttpResponse:
        """The confirmation page of "Keep this one": what each choice will do."""
        kept = request.GET["confirm_keep"]
        article_ids = sorted(set(request.GET.getlist("article_ids")) | {kept})
        others = [article_id for article_id in article_ids if article_id != kept]
        review = reverse("admin:similarity_duplicategroupreview_changelist")
        back = _safe_next(request, request.GET.get("next")) if request.GET.get("next") else review
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Keep {kept}?",
            "kept": kept,
            "others": others,
            "article_ids": article_ids,
            "next": back,
            "help_deactivate": HELP_KEEP_DEACTIVATE,
            "help_keep_only": HELP_KEEP_ONLY,
            "can_decide": self.has_change_permission(request),
        }
        return TemplateResponse(request, "admin/similarity/duplicates_confirm_keep.html", context)

    def _decide(self, request: HttpRequest) -> HttpResponse:
        back = _safe_next(request, request.POST.get("next"))
        if not self.has_change_permission(request):
            messages.error(request, "You may not record duplicate decisions.")
            return HttpResponseRedirect(back)
        article_ids = request.POST.getlist("article_ids")
        decision = request.POST.get("decision", "")
        user = request.user.get_username()
        action, _, target = decision.partition(":")
        try:
            if action == "keep" and target:
                outcome = duplicate_keep(kept=target, article_ids=article_ids,
                                         deactivate=request.POST.get("deactivate") == "1",
                                         decided_by=user)
                what = (f"; deactivated {', '.join(outcome.deactivated)}"
                        if outcome.deactivated else "; the others stay active")
                messages.success(request, MSG_KEPT.format(
                    kept=target, count=len(set(article_ids) - {target}), pairs=outcome.pairs,
                    what=what))
            elif action == "undo" and target:
                undone = duplicate_keep_undo(kept=target)
                messages.success(request, MSG_UNDONE.format(
                    kept=target, count=undone.decisions,
                    reactivated=", ".join(undone.reactivated) or "nothing"))
            elif action == "split" and target:
                duplicate_split(article_id=target, others=article_ids, decided_by=user)
                others = ", ".join(sorted(set(article_ids) - {target}))
                messages.success(request, MSG_SPLIT.format(article_id=target, others=others))
            else:
                pairs = duplicate_decision_record(
                    article_ids=article_ids, verdict=DuplicateDecision.Verdict.NOT_DUPLICATE,
                    decided_by=user,
                )
                messages.success(request, f"Recorded not duplicates for "
                                          f"{len(set(article_ids))} articles ({pairs} pairs); "
                                          "the group will not come back.")
        except InvalidQuery as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(back)


def _safe_next(request: HttpRequest, target: str | None) -> str:
    """``target`` if it is a URL on this site, else the review page itself."""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return request.get_full_path()


def confirm_keep_url(*, kept: str, article_ids: list[str], next_url: str = "") -> str:
    """The "Keep this one" confirmation page for ``kept`` among ``article_ids``."""
    query = [("confirm_keep", kept), *(("article_ids", a) for a in article_ids)]
    if next_url:
        query.append(("next", next_url))
    return reverse("admin:similarity_duplicategroupreview_changelist") + "?" + urlencode(query)


def _group_view(group: Any) -> dict[str, Any]:
    return {
        "group": group,
        "members": [
            {
                "member": member,
                "keep_url": confirm_keep_url(kept=member.article_id,
                                             article_ids=group.article_ids),
                "thumbnail_url": default_storage.url(member.image) if member.image else "",
                "change_url": reverse("admin:catalog_article_change", args=[member.pk]),
            }
            for member in group.members
        ],
    }
