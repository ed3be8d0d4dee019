"""Admin for supplier match runs: upload a feed or a zip, follow the run, review and export."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from lookalike_core.match_report import VERDICTS
from lookalike_core.sources import MatchSourceError

from catalog.models import Article
from similarity.errors import InvalidQuery
from similarity.models import MatchRun
from similarity.selectors.matching import (
    match_run_csv,
    match_run_rows,
    match_run_thumbnail_name,
    match_run_thumbnail_open,
)
from similarity.services.matching.runs import match_run_create, match_run_delete

ROWS_PER_PAGE = 25


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

    list_display = ("id", "source_name", "status", "counts", "model", "created_by",
                    "created_at", "review_link")
    list_filter = ("status",)
    readonly_fields = [f.name for f in MatchRun._meta.fields] + ["review_link"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="duplicate / similar / new / error")
    def counts(self, run: MatchRun) -> str:
        return (f"{run.same_count} / {run.similar_count} / {run.new_count} / "
                f"{run.error_count}")

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
        return [path("<int:run_id>/review/", review, name="similarity_matchrun_review"),
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
        run = get_object_or_404(MatchRun, pk=run_id)
        verdict = request.GET.get("verdict", "")
        if verdict not in ("", *VERDICTS):
            verdict = ""
        if request.GET.get("export") == "csv":
            response = StreamingHttpResponse(match_run_csv(run=run, verdict=verdict or None),
                                             content_type="text/csv")
            name = f"match-run-{run.pk}{f'-{verdict}' if verdict else ''}.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        page = Paginator(list(match_run_rows(run=run, verdict=verdict or None)),
                         ROWS_PER_PAGE).get_page(request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": f"Match run #{run.pk}: {run.source_name}", "run": run, "page": page,
            "rows": _rows_view(run, list(page)), "verdict": verdict, "verdicts": VERDICTS,
        }
        return TemplateResponse(request, "admin/similarity/matchrun_review.html", context)


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


def _rows_view(run: MatchRun, rows: list[Any]) -> list[dict[str, Any]]:
    """Each row with its photo's thumbnail and its matches' thumbnails and admin links."""
    wanted = {article_id for row in rows for article_id, _ in row.matches}
    articles = {
        values["article_id"]: values
        for values in Article.objects.filter(article_id__in=wanted).values(
            "pk", "article_id", "title", "image")
    }
    views = []
    for row in rows:
        matches = []
        for candidate in row.candidates:
            article_id = candidate.article_id
            article = articles.get(article_id)
            matches.append({
                "article_id": article_id, "distance": candidate.distance,
                "inliers": candidate.inliers, "inlier_ratio": candidate.inlier_ratio,
                "title": article["title"] if article else "",
                "thumbnail_url": (default_storage.url(article["image"])
                                  if article and article["image"] else ""),
                "change_url": (reverse("admin:catalog_article_change", args=[article["pk"]])
                               if article else ""),
            })
        views.append({
            "row": row, "matches": matches,
            "thumbnail_url": "" if row.verdict == "error" else reverse(
                "admin:similarity_matchrun_thumbnail",
                args=[run.pk, match_run_thumbnail_name(run=run, supplier_ref=row.supplier_ref)],
            ),
        })
    return views
