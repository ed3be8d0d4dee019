"""Search by photo in the admin: upload a photo or paste its URL, see the ranked catalog
candidates with thumbnails, distance, verdict and evidence (similarity.selectors.photo_search,
the API's search by photo)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.validators import URLValidator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from similarity.conf import similarity_settings
from similarity.errors import SimilarityError
from similarity.models import PhotoSearch
from similarity.selectors.photo_search import MSG_ONE_PHOTO, MSG_TOO_LARGE, photo_search

DEFAULT_K = 10


class PhotoSearchForm(forms.Form):
    image = forms.FileField(
        label="Photo", required=False, widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
        help_text="A JPEG, PNG or WebP file, up to the upload limit (UPLOAD_MAX_BYTES); "
                  "checked and decoded like the API's uploads.")
    image_url = forms.URLField(
        label="or its URL", required=False, max_length=2048, assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Fetched by the server like the API's image_url: private addresses are "
                  "refused unless DOWNLOAD_ALLOW_PRIVATE.")
    k = forms.IntegerField(label="Candidates", min_value=1, initial=DEFAULT_K)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["k"] = forms.IntegerField(  # MAX_K may change with the settings
            label="Candidates", min_value=1, max_value=similarity_settings().max_k,
            initial=DEFAULT_K)

    def clean_image(self) -> Any:
        upload = self.cleaned_data.get("image")
        limit = similarity_settings().upload_max_bytes
        if upload is not None and upload.size is not None and upload.size > limit:
            raise forms.ValidationError(MSG_TOO_LARGE.format(size=upload.size, limit=limit))
        return upload

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("image")) == bool(data.get("image_url")) and not self.errors:
            raise forms.ValidationError(MSG_ONE_PHOTO)
        return data


@admin.register(PhotoSearch)
class PhotoSearchAdmin(admin.ModelAdmin):
    """The changelist is the search page; nothing is stored, so nothing is added or changed."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PhotoSearch]:
        return super().get_queryset(request).none()  # a page, not a list of articles

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.changelist_view)
        return [path("", view, name="{}_{}_changelist".format(*info))]

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = PhotoSearchForm(request.POST or None, request.FILES or None)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": "Search by photo", "form": form,
        }
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["image"]
            try:
                found = photo_search(
                    image=upload.read() if upload else None,
                    image_url=form.cleaned_data["image_url"] or None,
                    k=form.cleaned_data["k"])
            except SimilarityError as exc:
                form.add_error(None, str(exc))
            else:
                context.update(found=found, candidates=_candidates(found.results))
        return TemplateResponse(request, "admin/similarity/photo_search.html", context)


def _candidates(results: list[Any]) -> list[dict[str, Any]]:
    return [{
        "rank": rank, "article_id": result.article_id, "title": result.title,
        "category": result.category, "distance": result.distance,
        "inliers": getattr(result, "inliers", None),
        "inlier_ratio": getattr(result, "inlier_ratio", None),
        "thumbnail_url": default_storage.url(result.image) if result.image else "",
        "change_url": reverse("admin:catalog_article_change", args=[result.pk]),
    } for rank, result in enumerate(results, start=1)]
