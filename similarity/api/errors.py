"""Every API error as JSON {"error": {"code", "message"[, "fields"]}} with the right status."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from catalog.selectors import public_download_error
from similarity.errors import (
    ArticleNotFound,
    ArticleNotIndexed,
    BuildAlreadyRunning,
    ClientModelUnavailable,
    ImageUrlFailed,
    IndexNotReady,
    InvalidImageQuery,
    InvalidInput,
    InvalidQuery,
    QueryThrottled,
    SimilarityError,
    TaskQueueUnavailable,
    UploadsBusy,
)

# Django logs refused requests there (django.security.<Error>); API views answer them here.
security_logger = logging.getLogger("django.security")
logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[SimilarityError], int] = {
    ArticleNotFound: status.HTTP_404_NOT_FOUND,
    ArticleNotIndexed: status.HTTP_409_CONFLICT,
    BuildAlreadyRunning: status.HTTP_409_CONFLICT,
    ClientModelUnavailable: status.HTTP_409_CONFLICT,
    IndexNotReady: status.HTTP_503_SERVICE_UNAVAILABLE,
    InvalidQuery: status.HTTP_400_BAD_REQUEST,
    InvalidImageQuery: status.HTTP_400_BAD_REQUEST,
    UploadsBusy: status.HTTP_503_SERVICE_UNAVAILABLE,
    ImageUrlFailed: status.HTTP_400_BAD_REQUEST,
    QueryThrottled: status.HTTP_429_TOO_MANY_REQUESTS,
    TaskQueueUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


class UploadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "upload_too_large"
    default_detail = "upload too large"


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"
    default_detail = "a Content-Length header is required"


class EmptyUpload(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "empty_upload"
    default_detail = "empty request body"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message, **extra}}


def similarity_error(exc: SimilarityError, *, user: Any) -> tuple[int, dict[str, Any]]:
    """(HTTP status, error body) of a similarity error as ``user`` may read it.

    Download errors name hosts, addresses and ports: anonymous clients read "download
    failed" instead (catalog.selectors.public_download_error).
    """
    extra: dict[str, Any] = {}
    message = str(exc)
    if isinstance(exc, ArticleNotIndexed):
        if getattr(user, "is_authenticated", False):
            extra = {"article_id": exc.article_id, "reason": exc.reason}
        else:
            extra = {"article_id": exc.article_id, "reason": exc.public_reason}
            message = exc.public_message()
    elif isinstance(exc, ArticleNotFound):
        extra = {"article_id": exc.article_id}
    elif isinstance(exc, InvalidInput):
        extra = {"fields": exc.fields}
    elif isinstance(exc, ImageUrlFailed):
        message = exc.public_message(public_download_error(error=exc.reason, user=user))
    code = STATUS_BY_ERROR.get(type(exc), status.HTTP_400_BAD_REQUEST)
    return code, error_body(exc.code, message, **extra)


# The database unreachable, restarting, out of connections or locked (SQLite): a retry may
# pass, so 503 (and a log line), not a 500. Integrity and programming errors stay bugs.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
MSG_DATABASE_UNAVAILABLE = "the database is unavailable; retry in a few seconds"
DATABASE_RETRY_AFTER = "5"


def database_unavailable(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, error body and headers of a request the database could not serve (logged)."""
    logger.error("Database unavailable: %s: %s", type(exc).__name__, exc)
    return (status.HTTP_503_SERVICE_UNAVAILABLE,
            error_body("database_unavailable", MSG_DATABASE_UNAVAILABLE),
            {"Retry-After": DATABASE_RETRY_AFTER})


# Django's request-parsing refusals (SuspiciousOperation subclasses): status, code, message.
# Their messages name only Django's limits, no client data.
SUSPICIOUS_ERRORS: dict[type[SuspiciousOperation], tuple[int, str, str]] = {
    RequestDataTooBig: (
        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        "request_too_large",
        "the request body outside uploaded files exceeds DATA_UPLOAD_MAX_MEMORY_SIZE",
    ),
    TooManyFieldsSent: (
        status.HTTP_400_BAD_REQUEST,
        "too_many_fields",
        "the request has more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS",
    ),
    TooManyFilesSent: (
        status.HTTP_400_BAD_REQUEST,
        "too_many_files",
        "the request has more files than DATA_UPLOAD_MAX_NUMBER_FILES",
    ),
    DisallowedHost: (
        status.HTTP_400_BAD_REQUEST, "disallowed_host", "the Host header is not allowed"
    ),
}


def suspicious_error(exc: Exception) -> tuple[int, dict[str, Any]]:
    """Status and error body for a refused request (SuspiciousOperation or BadRequest)."""
    for kind, (code_status, code, message) in SUSPICIOUS_ERRORS.items():
        if isinstance(exc, kind):
            return code_status, error_body(code, message)
    return status.HTTP_400_BAD_REQUEST, error_body("bad_request", "bad request")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF EXCEPTION_HANDLER: similarity errors and DRF errors in the same JSON shape."""
    if isinstance(exc, SimilarityError):
        user = getattr(context.get("request"), "user", None)
        code, body = similarity_error(exc, user=user)
        return Response(body, status=code)

    if isinstance(exc, DATABASE_UNAVAILABLE):
        code_status, body, headers = database_unavailable(exc)
        return Response(body, status=code_status, headers=headers)

    if isinstance(exc, SuspiciousOperation):  # multipart limits hit while parsing the body
        security_logger.warning("%s: %s", type(exc).__name__, exc)
        code_status, body = suspicious_error(exc)
        return Response(body, status=code_status)

    # Django's own Http404 / PermissionDenied carry no DRF code: use DRF's equivalents.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handling applies
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid_input", validation_message(fields), fields=fields)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        error_code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = error_body(str(error_code), str(detail))
    return response


def validation_message(fields: dict[str, Any]) -> str:
    """One line from a serializer's errors: "field: message; other: message"."""
    return "; ".join(
        f"{name}: {' '.join(str(m) for m in _flatten(messages))}"
        if name != "non_field_errors"
        else " ".join(str(m) for m in _flatten(messages))
        for name, messages in fields.items()
    )


def _flatten(messages: Any) -> list[Any]:
    if isinstance(messages, list | tuple):
        return [m for item in messages for m in _flatten(item)]
    if isinstance(messages, dict):
        return [m for item in messages.values() for m in _flatten(item)]
    return [messages]
