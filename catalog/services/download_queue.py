"""Image downloads asked for in a request (the admin): queued as a django-q2 task.

A download waits on other servers: ``timeout`` x ``DEADLINE_FACTOR`` per image, with retries,
which one slow server stretches past gunicorn's 30 s worker timeout. A worker runs it instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from catalog.services.downloads import DownloadSummary

DOWNLOAD_TASK = "catalog.tasks.images_download_task"
REPORTED_FAILURES = 10


def images_download_enqueue(*, article_ids: Sequence[str], only_failed: bool) -> None:
    """Queue a download of these articles' images, sent once the current transaction commits."""
    from django_q.tasks import async_task

    ids = list(article_ids)
    transaction.on_commit(lambda: async_task(DOWNLOAD_TASK, ids, only_failed))


def images_download_report(*, summary: DownloadSummary) -> str:
    """The task's result text: counts, then the first failures with their reasons."""
    lines = [f"{summary.total} article(s): {summary}"]
    lines += [f"{aid}: {reason}" for aid, reason in summary.failures[:REPORTED_FAILURES]]
    more = len(summary.failures) - REPORTED_FAILURES
    if more > 0:
        lines.append(f"(and {more} more failures)")
    if summary.not_retried:
        lines.append(f"{summary.not_retried} previously failed article(s) not retried")
    return "\n".join(lines)
