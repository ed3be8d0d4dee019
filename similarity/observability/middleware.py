"""Request timing for the latency histograms (labelled by route name, not raw path), and the
probe endpoints answered before Django's Host check."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import resolve

from similarity.observability.metrics import request_observe

UNMATCHED = "unmatched"


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        request_observe(
            route=(match.view_name if match is not None else "") or UNMATCHED,
            method=request.method or "",
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response


# Probes and scrapers address a process by IP and port ("10.0.3.7:8000"), rarely a name in
# ALLOWED_HOSTS. These answers hold nothing derived from the Host header (no absolute URL)
# and are never cached, so the Host check protects nothing there.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class ProbeMiddleware:
    """Answer /healthz, /readyz and /metrics before CommonMiddleware validates the Host.

    Placed right after RequestMetricsMiddleware; the views keep their own access rules
    (/metrics and the /readyz details: loopback or METRICS_TOKEN).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in PROBE_PATHS:
            return self.get_response(request)
        match = resolve(request.path_info)
        request.resolver_match = match
        response: HttpResponse = match.func(request, *match.args, **match.kwargs)
        return response
