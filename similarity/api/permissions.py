"""API access and limits: read access per API_AUTH, staff-only views, upload throttling."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from similarity.conf import similarity_settings

UPLOAD_THROTTLE_SCOPE = "image_search"


class ReadAccess(BasePermission):
    """Anyone when LOOKALIKE API_AUTH is "open"; a token or session login when "token"."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if similarity_settings().api_auth == "open":
            return True
        return bool(request.user and request.user.is_authenticated)


class StaffAccess(BasePermission):
    """A staff user (session or token) in every API_AUTH mode: for what anonymous clients of
    an open API must not see (duplicate review, build errors and failures)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class UploadThrottle(ScopedRateThrottle):
    """ScopedRateThrottle whose rate is LOOKALIKE UPLOAD_THROTTLE, read on every request.

    DRF binds THROTTLE_RATES when the module is imported; reading our setting here keeps a
    settings change (or override in tests) effective and keeps one place for the value.
    """

    def get_rate(self) -> str | None:
        return similarity_settings().upload_throttle or None
