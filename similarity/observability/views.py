"""/healthz (process up), /readyz (dependencies) and /metrics (Prometheus exposition)."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from similarity.conf import similarity_settings
from similarity.errors import IndexNotReady
from similarity.models import IndexBuild
from similarity.observability.metrics import StateCollector
from similarity.selectors.store import get_store

logger = logging.getLogger(__name__)

MSG_METRICS_FORBIDDEN = (
    "metrics answer loopback clients, or clients sending Authorization: Bearer <METRICS_TOKEN>"
)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and answering; touches nothing else (no database)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database, the index and the broker are usable; 503 naming what failed.

    Anyone sees each check's name and ok (and the queue age); the details (error strings,
    which name hosts and ports, index build, broker kind) only callers allowed /metrics.
    """
    checks: dict[str, dict[str, Any]] = {}
    for name, check in (("database", _database), ("index", _index), ("broker", _broker),
                        ("queue", _queue)):
        try:
            checks[name] = {"ok": True, **check()}
        except Exception as exc:  # a readiness probe reports every failure, whatever it is
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if name == "database" and not checks[name]["ok"]:
            break  # the other checks read the database
    ready = all(check["ok"] for check in checks.values()) and "index" in checks
    failed = [name for name, check in checks.items() if not check["ok"]]
    if not _metrics_allowed(request):
        # Error strings and details name hosts, ports and paths: logged above, not public.
        checks = {name: _public_check(check) for name, check in checks.items()}
    body = {"status": "ready" if ready else "not ready", "failed": failed, "checks": checks}
    return JsonResponse(body, status=200 if ready else 503)


PUBLIC_CHECK_FIELDS = ("ok", "oldest_queued_build_age_seconds")


def _public_check(check: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in check.items() if key in PUBLIC_CHECK_FIELDS}


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"vendor": connection.vendor}


def _index() -> dict[str, Any]:
    store = get_store()
    try:
        loaded = store.get()
    except IndexNotReady:
        if IndexBuild.objects.filter(status=IndexBuild.Status.SUCCEEDED).exists():
            raise  # a build succeeded, yet its index cannot be loaded
        return {"state": "not built yet"}
    return {"state": "loaded", "build": loaded.name, "count": int(loaded.index.ntotal)}


def _broker() -> dict[str, Any]:
    from django_q.brokers import get_broker

    broker = get_broker()
    broker.ping()  # Redis: PING; ORM: the database checked above
    kind = similarity_settings().broker
    return {"kind": kind, "queued_tasks": broker.queue_size()}


def _queue() -> dict[str, Any]:
    oldest = (
        IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return {"oldest_queued_build_age_seconds": round(age, 1)}


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: this process's (or all workers') histograms + database state."""
    if not _metrics_allowed(request):
        return HttpResponse(MSG_METRICS_FORBIDDEN + "\n", status=403, content_type="text/plain")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        process_metrics = generate_latest(registry)
    else:
        process_metrics = generate_latest(REGISTRY)
    state = CollectorRegistry()
    state.register(StateCollector())
    return HttpResponse(process_metrics + generate_latest(state), content_type=CONTENT_TYPE_LATEST)


def _metrics_allowed(request: HttpRequest) -> bool:
    token = similarity_settings().metrics_token
    header = request.headers.get("Authorization", "")
    if token and secrets.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
