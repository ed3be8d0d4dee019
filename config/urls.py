"""Top-level URL configuration."""

from django.conf import settings
from django.contrib import admin
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.urls import include, path, re_path
from django.views.static import serve

from similarity.observability.views import healthz, metrics, readyz

# JSON 400 / 403 / 404 / 500 under /api/ (similarity.api.fallback), Django's pages elsewhere.
handler400 = "config.handlers.bad_request"
handler403 = "config.handlers.permission_denied"
handler404 = "config.handlers.not_found"
handler500 = "config.handlers.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("similarity.api.urls")),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]


def media(request: HttpRequest, path: str) -> HttpResponseBase:
    """Serve a downloaded image from the default storage's directory (MEDIA_ROOT unless a
    shared directory is configured), read per request (tests move it)."""
    if not isinstance(default_storage, FileSystemStorage):
        raise Http404("images are served by their storage, not from a local directory")
    return serve(request, path, document_root=str(default_storage.location))


if settings.SERVE_MEDIA:
    urlpatterns += [re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>.*)$", media)]
