"""django-q2 tasks of the catalog: image downloads queued from the admin."""

from __future__ import annotations

import logging

from catalog.services.download_queue import images_download_report
from catalog.services.downloads import images_download

logger = logging.getLogger(__name__)


def images_download_task(article_ids: list[str], only_failed: bool) -> str:
    """Download the images of ``article_ids`` in a worker; the result is the summary text."""
    summary = images_download(article_ids=article_ids, only_failed=only_failed, progress=False)
    report = images_download_report(summary=summary)
    logger.info("Queued image download: %s", report)
    return report
