"""JSON answers for what no API view handles: unknown /api/ paths (404), requests Django
refused (400/403/413) and server errors."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve

from similarity.api.errors import (
    DATABASE_UNAVAILABLE,
    database_unavailable,
    error_body,
    suspicious_error,
)

NOT_FOUND_NAME = "not-found"
MSG_NO_ENDPOINT = "no API endpoint at {path}"
MSG_SERVER_ERROR = "server error; it has been logged"


def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """The last /api/ route: unknown paths answer 404 in the API's error shape.

    Being a route, it also shadows CommonMiddleware's APPEND_SLASH redirect, which is redone
    here for GET/HEAD of a known endpoint without its trailing slash.
    """
    slashless = not request.path.endswith("/")
    if settings.APPEND_SLASH and request.method in ("GET", "HEAD") and slashless:
        try:
            match = resolve(request.path_info + "/")
        except Resolver404:
            match = None
        if match is not None and match.url_name != NOT_FOUND_NAME:
            query = request.META.get("QUERY_STRING", "")
            target = request.path + "/" + (f"?{query}" if query else "")
            return HttpResponsePermanentRedirect(target)
    return JsonResponse(
        error_body("not_found", MSG_NO_ENDPOINT.format(path=request.path)), status=404
    )


def api_server_error(request: HttpRequest) -> HttpResponse:
    """A 500 under /api/ in the API's error shape (django.request logs the traceback)."""
    return JsonResponse(error_body("server_error", MSG_SERVER_ERROR), status=500)


def api_bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A request Django refused before an API view ran (a disallowed Host, too many fields,
    a body over the limits), in the API's error shape. Uses nothing of the request's Host."""
    code_status, body = suspicious_error(exception)
    return JsonResponse(body, status=code_status)


def api_permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A 403 raised outside the API views (middleware), in the API's error shape."""
    return JsonResponse(error_body("permission_denied", "permission denied"), status=403)


class DatabaseUnavailableMiddleware:
    """503 JSON for a database error under /api/ that no API view turned into one: raised
    while rendering an error page (the browsable API's context reads the user again) or in
    a view outside DRF. Elsewhere (the admin) Django's own handling stays."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_UNAVAILABLE) or not request.path.startswith("/api/"):
            return None
        code_status, body, headers = database_unavailable(exception)
        response = JsonResponse(body, status=code_status)
        for name, value in headers.items():
            response[name] = value
        return response
