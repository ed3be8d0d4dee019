"""Local features of the catalog's images, computed at build time (the "local features"
step) so the first verification of an article does not pay for them.

Stored by image content (``selectors.verification.local_feature_store``), not per build:
an incremental build computes only new or changed images, and a model change reuses all.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from catalog.models import Article
from catalog.progress import progress_bar
from similarity.selectors.verification import article_features, local_feature_store

logger = logging.getLogger(__name__)


@dataclass
class LocalFeaturesOutcome:
    computed: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)  # article ids without readable images


def local_features_update(*, workers: int = 2, progress: bool = True) -> LocalFeaturesOutcome:
    """Compute and store the features of every active article's image not stored yet."""
    store = local_feature_store()
    outcome = LocalFeaturesOutcome()
    missing: dict[str, tuple[str, str]] = {}  # sha256 -> (article_id, image name)
    rows = Article.objects.filter(is_active=True).exclude(image="").exclude(
        image_sha256="").values_list("article_id", "image_sha256", "image")
    for article_id, sha, image in rows.iterator():
        if sha in missing or store.has(sha):
            outcome.reused += 1
        else:
            missing[sha] = (article_id, image)
    bar = progress_bar(total=len(missing), desc="Local features", unit="image",
                       enabled=progress)

    def compute(item: tuple[str, tuple[str, str]]) -> str | None:
        sha, (article_id, image) = item
        found = article_features(sha256=sha, image=image)
        bar.update(1)
        return None if found is not None else article_id

    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="local-features") as pool:
            for failed in pool.map(compute, missing.items()):
                if failed is None:
                    outcome.computed += 1
                else:
                    outcome.failed.append(failed)
    finally:
        bar.close()
    return outcome
