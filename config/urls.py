"""Top-level URL configuration."""

from django.conf import settings
from django.contrib import admin
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.static import serve

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("similarity.api.urls")),
]



def media(request: HttpRequest, path: str) -> HttpResponse:
    """Serve a downloaded image from the default storage's directory (MEDIA_ROOT unless a
    shared directory is configured), read per request (tests move it)."""
    return serve(request, path, document_root=default_storage.location)


if settings.SERVE_MEDIA:
    urlpatterns += [re_path(rf"^{settings.MEDIA_URL.lstrip('/')}(?P<path>.*)$", media)]
