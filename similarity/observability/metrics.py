"""Prometheus metrics: request and search latency per process, the rest read at scrape time.

Latency histograms live in the serving processes (prometheus-client's multiprocess mode sums
them over gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set). Index, build, queue and
download figures are read from the database at scrape time (StateCollector), so they are right
whichever process answers the scrape and whichever process did the work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from django.db.models import Case, Count, Max, Min, Q, Value, When
from django.utils import timezone
from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from catalog.models import Article
from similarity.models import IndexBuild

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUEST_LATENCY = Histogram(
    "lookalike_http_request_duration_seconds",
    "Time to answer a request, by route name (not raw path), method and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
SEARCH_LATENCY = Histogram(
    "lookalike_search_duration_seconds",
    "Time to answer a successful similarity search, by query kind (article, text, image).",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Route names of the search endpoints and the query kind of each method.
SEARCH_ROUTES: dict[tuple[str, str], str] = {
    ("api:article-similar", "GET"): "article",
    ("api:similar", "GET"): "text",
    ("api:similar", "POST"): "image",
}

# download_error prefixes (catalog/services/fetching.py, downloads.py) -> a bounded reason.
DOWNLOAD_REASONS: tuple[tuple[Q, str], ...] = (
    (Q(download_error__startswith="HTTP 4"), "http_4xx"),
    (Q(download_error__startswith="HTTP 5"), "http_5xx"),
    (Q(download_error__startswith="HTTP "), "http_other"),
    (Q(download_error__startswith="timed out") | Q(download_error__startswith="too slow"),
     "timeout"),
    (Q(download_error__startswith="image too large"), "too_large"),
    (Q(download_error__startswith="not an image"), "not_an_image"),
    (Q(download_error__startswith="connection failed"), "connection"),
    (Q(download_error__startswith="incomplete body"), "incomplete"),
    (Q(download_error__startswith="unsupported URL scheme"), "bad_url"),
    (Q(download_error__startswith="more than"), "redirects"),
    (Q(download_error__startswith="could not store"), "storage"),
    (Q(download_error__icontains="private") | Q(download_error__icontains="not allowed"),
     "refused_address"),
    (Q(download_error__icontains="image"), "bad_image"),
)


def request_observe(*, route: str, method: str, status: int, seconds: float) -> None:
    """Record one answered request (and its search latency when it was a successful search)."""
    method = method if method in HTTP_METHODS else "other"  # bounded label values
    REQUEST_LATENCY.labels(route=route, method=method, status=str(status)).observe(seconds)
    kind = SEARCH_ROUTES.get((route, method))
    if kind is not None and status == 200:
        SEARCH_LATENCY.labels(kind=kind).observe(seconds)


class StateCollector(Collector):
    """Index size and age, build outcomes and durations, queue age, download failures."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        up = GaugeMetricFamily(
            "lookalike_state_up",
            "1 when the database answered for the state gauges; 0 when it did not (logged).",
        )
        try:
            state = [*self._index(now), *self._builds(now), *self._downloads()]
            up.add_metric([], 1.0)
        except DatabaseError as exc:
            # The process metrics must still export when the database is down.
            logger.warning("metrics: database state skipped: %s: %s", type(exc).__name__, exc)
            state = []
            up.add_metric([], 0.0)
        yield up
        yield from state

    def _index(self, now: Any) -> Iterator[Metric]:
        current = (
            IndexBuild.objects.filter(status=IndexBuild.Status.SUCCEEDED)
            .exclude(finished_at=None)
            .order_by("-finished_at")
            .values("article_count", "finished_at", "model")
            .first()
        )
        size = GaugeMetricFamily(
            "lookalike_index_articles", "Articles in the latest successful index build."
        )
        age = GaugeMetricFamily(
            "lookalike_index_age_seconds", "Seconds since the latest successful index build."
        )
        if current is not None:
            size.add_metric([], current["article_count"])
            age.add_metric([], (now - current["finished_at"]).total_seconds())
        yield size
        yield age

    def _builds(self, now: Any) -> Iterator[Metric]:
        outcomes = GaugeMetricFamily(
            "lookalike_index_builds",
            "Index build records, by status (queued, running, succeeded, failed, ...).",
            labels=["status"],
        )
        counts = dict(
            IndexBuild.objects.values_list("status").annotate(n=Count("pk")).values_list(
                "status", "n"
            )
        )
        for status in IndexBuild.Status.values:
            outcomes.add_metric([status], counts.get(status, 0))
        yield outcomes

        duration = GaugeMetricFamily(
            "lookalike_index_build_last_duration_seconds",
            "Duration of the latest finished build, by its status.",
            labels=["status"],
        )
        finished = (
            IndexBuild.objects.exclude(started_at=None)
            .exclude(finished_at=None)
            .values("status")
            .annotate(last=Max("finished_at"))
        )
        for row in finished:
            build = IndexBuild.objects.filter(status=row["status"], finished_at=row["last"]).first()
            if build is not None and build.duration is not None:
                duration.add_metric([row["status"]], build.duration)
        yield duration

        oldest = IndexBuild.objects.filter(status=IndexBuild.Status.QUEUED).aggregate(
            oldest=Min("created_at")
        )["oldest"]
        queue_age = GaugeMetricFamily(
            "lookalike_queue_oldest_age_seconds",
            "Age of the oldest queued index build (0 when none is queued).",
        )
        queue_age.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
        yield queue_age

    def _downloads(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "lookalike_download_failures",
            "Articles whose image download failed, by reason.",
            labels=["reason"],
        )
        reason = Case(
            *(When(condition, then=Value(label)) for condition, label in DOWNLOAD_REASONS),
            default=Value("other"),
        )
        rows = (
            Article.objects.filter(download_status=Article.DownloadStatus.FAILED)
            .annotate(reason=reason)
            .values("reason")
            .annotate(n=Count("pk"))
        )
        for row in rows:
            family.add_metric([row["reason"]], row["n"])
        yield family
