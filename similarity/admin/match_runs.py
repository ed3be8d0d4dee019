"""Admin for supplier match runs: upload a feed or a zip, follow the run, review (its views:
similarity.admin.match_review), export."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from lookalike_core.sources import MatchSourceError

from similarity.admin.match_review import confirm_same_view, decide_view, review_view
from similarity.errors import InvalidQuery
from similarity.models import MatchRun
from similarity.selectors.matching import (
    match_run_thumbnail_open,
    match_runs_with_decision_counts,
)
from similarity.services.matching.runs import match_run_create, match_run_delete


class MatchRunUploadForm(forms.Form):
    upload = forms.FileField(
        label="Supplier file",
        help_text="A CSV or JSON Lines feed (columns supplier_ref, image_url; other columns "
                  "are kept in the report) or a zip of photos (supplier_ref = the path in the "
                  "zip without extension).",
    )
    k = forms.IntegerField(label="Matches per photo", min_value=1, max_value=20, initial=5)


@admin.register(MatchRun)
class MatchRunAdmin(admin.ModelAdmin):
    """Runs are created by the upload page and written by the task: nothing here is editable."""

    list_display = ("id", "source_name", "status", "counts", "reviewed", "model",
                    "created_by", "created_at", "review_link")
    list_filter = ("status",)
    readonly_fields = [f.name for f in MatchRun._meta.fields] + ["review_link"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="same / similar / new / error")
    def counts(self, run: MatchRun) -> str:
        return (f"{run.same_count} / {run.similar_count} / {run.new_count} / "
                f"{run.error_count}")

    def get_queryset(self, request: HttpRequest) -> QuerySet[MatchRun]:
        return match_runs_with_decision_counts(super().get_queryset(request))

    @admin.display(description="confirmed / new / skipped / undecided")
    def reviewed(self, run: MatchRun) -> str:
        confirmed = getattr(run, "confirmed_count", 0)
        new = getattr(run, "marked_new_count", 0)
        skipped = getattr(run, "skipped_count", 0)
        undecided = max(0, run.total_count - confirmed - new - skipped)
        return f"{confirmed} / {new} / {skipped} / {undecided}"

    @admin.display(description="results")
    def review_link(self, run: MatchRun) -> str:
        url = reverse("admin:similarity_matchrun_review", args=[run.pk])
        return format_html('<a href="{}">Review</a>', url)

    def delete_model(self, request: HttpRequest, obj: MatchRun) -> None:
        match_run_delete(run=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for run in queryset:
            match_run_delete(run=run)

    def get_urls(self) -> list:
        review = self.admin_site.admin_view(self.review_view)
        thumbnail = self.admin_site.admin_view(self.thumbnail_view)
        decide = self.admin_site.admin_view(decide_view)
        confirm_same = self.admin_site.admin_view(self.confirm_same_view)
        return [path("<int:run_id>/review/", review, name="similarity_matchrun_review"),
                path("<int:run_id>/decide/", decide, name="similarity_matchrun_decide"),
                path("<int:run_id>/confirm-same/", confirm_same,
                     name="similarity_matchrun_confirm_same"),
                path("<int:run_id>/thumbnails/<str:name>", thumbnail,
                     name="similarity_matchrun_thumbnail"),
                *super().get_urls()]

    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = MatchRunUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                run = match_run_create(upload=form.cleaned_data["upload"],
                                       k=form.cleaned_data["k"],
                                       created_by=request.user.get_username())
            except (MatchSourceError, InvalidQuery, ValueError) as exc:
                form.add_error("upload", str(exc))
            else:
                messages.success(request, f"Match run #{run.pk} queued: its results appear on "
                                          "the review page as the run goes.")
                return HttpResponseRedirect(
                    reverse("admin:similarity_matchrun_review", args=[run.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Match supplier photos", "form": form}
        return TemplateResponse(request, "admin/similarity/matchrun_upload.html", context)

    def review_view(self, request: HttpRequest, run_id: int) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return review_view(self, request, get_object_or_404(MatchRun, pk=run_id))

    def confirm_same_view(self, request: HttpRequest, run_id: int) -> HttpResponseBase:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return confirm_same_view(self, request, get_object_or_404(MatchRun, pk=run_id))

    def thumbnail_view(self, request: HttpRequest, run_id: int, name: str) -> HttpResponseBase:
        """A supplier photo's thumbnail, to staff who may view runs: supplier files are never
        public (the storage has no URL for them); 404 for anything else of the folder."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = get_object_or_404(MatchRun, pk=run_id)
        try:
            handle = match_run_thumbnail_open(run=run, name=name)
        except FileNotFoundError:
            raise Http404("no such thumbnail") from None
        response = FileResponse(handle, content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response

