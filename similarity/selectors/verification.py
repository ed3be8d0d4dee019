"""Verification of image queries (reads): catalog images' local features from the
content-addressed store (computed and stored on a miss), a photo's short list verified, and
``photo_match``: the one function that ranks and verifies a single photo (the API's image
search and the admin's search by photo both call it; match runs use its parts in batches).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from django.core.files.storage import default_storage
from lookalike_core.imaging import ImageDecodeError, load_image
from PIL import Image

from catalog.models import Article
from similarity.conf import similarity_settings
from similarity.engine.verification import (
    WORKING_SIDE,
    FeatureStore,
    LocalFeatures,
    PairEvidence,
    VerifyPolicy,
    extract_features,
    gated_order,
    pair_verify,
    runner_up_inliers,
    verdict_for,
)
from similarity.selectors.search import (
    SimilarResult,
    image_query_vector,
    query_embedder,
    similar_to_query_vector,
)
from similarity.selectors.store import LoadedIndex, get_store
from similarity.selectors.uploads import query_image_decode
from similarity.selectors.validation import validate_k

logger = logging.getLogger(__name__)

# Photos are decoded with this shorter side at least when they will be verified: enough
# detail for WORKING_SIDE features, still far below a phone photo's full size.
VERIFY_MIN_SIDE = WORKING_SIDE // 2

_stores: dict[Path, FeatureStore] = {}
_stores_lock = threading.Lock()


def local_feature_store() -> FeatureStore:
    """The process's feature store for the configured data directory."""
    conf = similarity_settings()
    root = conf.local_features_root
    with _stores_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = FeatureStore(root, memory_items=conf.local_features_cache)
        return store


def article_features(*, sha256: str, image: str) -> LocalFeatures | None:
    """The local features of a catalog image (storage name ``image``, content ``sha256``):
    from the store, else computed from the file and stored; None when the file cannot be
    read or decoded (the candidate is then simply not verified)."""
    store = local_feature_store()
    if sha256:
        found = store.get(sha256)
        if found is not None:
            return found
    if not image:
        return None
    try:
        with default_storage.open(image, "rb") as handle:
            picture = load_image(handle.read())
    except (OSError, ImageDecodeError) as exc:
        logger.warning("No local features for %s: %s", image, exc)
        return None
    features = extract_features(picture)
    if sha256:
        store.put(sha256, features)
    return features


CandidateImage = tuple[str, str]  # (image_sha256, image storage name) of a candidate article


def candidate_images(pks: list[int]) -> dict[int, CandidateImage]:
    """Each article's image content hash and storage name, in one query (the batch's
    candidates are looked up once, before verification runs in threads)."""
    return {pk: (sha, image) for pk, sha, image in Article.objects.filter(
        pk__in=pks).values_list("pk", "image_sha256", "image")}


def shortlist_verify(
    photo: LocalFeatures, candidates: list[CandidateImage | None]
) -> list[PairEvidence | None]:
    """Evidence for each candidate image that it is what ``photo`` shows; None for a
    candidate without a readable image. No database access: safe in worker threads."""
    descriptors = photo.root_sift()
    evidence: list[PairEvidence | None] = []
    for candidate in candidates:
        features = None if candidate is None else article_features(
            sha256=candidate[0], image=candidate[1])
        evidence.append(None if features is None else pair_verify(
            photo, features, photo_descriptors=descriptors))
    return evidence


@dataclass(frozen=True)
class VerifiedResult:
    """A ranked article with its verification evidence (None: not verified)."""

    result: SimilarResult
    evidence: PairEvidence | None


@dataclass(frozen=True)
class PhotoMatch:
    """A photo's verdict and its ranked articles (verified first when ``verified``)."""

    model: str
    index_build: str
    verdict: str
    verified: bool
    results: list[VerifiedResult]


def photo_match(
    *,
    image: bytes | Image.Image,
    k: int | None = None,
    verify: bool | None = None,
    category: str | None = None,
    policy: VerifyPolicy | None = None,
) -> PhotoMatch:
    """Rank the catalog for one photo and, with ``verify`` (default: the VERIFY setting),
    verify the global short list with local features: verified candidates first, the
    verdict (same / similar / new) and each result's evidence.

    Bytes (an upload) are decoded within the upload limits. Raises IndexNotReady,
    InvalidQuery (k, an undecodable upload).
    """
    k = validate_k(k)
    conf = similarity_settings()
    verify = conf.verify if verify is None else verify
    policy = policy or VerifyPolicy()
    loaded = get_store().get()
    if isinstance(image, bytes | bytearray):
        min_side = max(query_embedder(loaded).image_size or 0, VERIFY_MIN_SIDE if verify else 0)
        image = query_image_decode(data=bytes(image), min_side=min_side)
    vector = image_query_vector(loaded, image)
    fetch = max(k, policy.short_list) if verify else k
    found = similar_to_query_vector(loaded, vector, k=fetch, category=category,
                                    collapse=False).results
    verdict, ranked = results_verify(loaded, image, found, k=k, verify=verify, policy=policy)
    return PhotoMatch(model=loaded.manifest.model, index_build=loaded.name, verified=verify,
                      verdict=verdict, results=ranked)


def results_verify(
    loaded: LoadedIndex, image: Image.Image, found: list[SimilarResult], *, k: int,
    verify: bool, policy: VerifyPolicy,
) -> tuple[str, list[VerifiedResult]]:
    """The verdict and the first ``k`` of ``found`` (a global ranking of at least the short
    list when ``verify``), verified and re-ranked when ``verify``."""
    evidence: list[PairEvidence | None] = [None] * len(found)
    order = list(range(len(found)))
    if verify and found:
        shortlist = found[:policy.short_list]
        images = candidate_images([r.pk for r in shortlist])
        evidence = shortlist_verify(extract_features(image),
                                    [images.get(r.pk) for r in shortlist])
        order = gated_order(evidence, policy=policy)
        evidence += [None] * (len(found) - len(shortlist))
        order += list(range(len(shortlist), len(found)))
    ranked = [VerifiedResult(found[rank], evidence[rank]) for rank in order][:k]
    conf = similarity_settings()
    model = loaded.manifest.model
    verdict = verdict_for(
        distance=ranked[0].result.distance if ranked else None,
        evidence=evidence[order[0]] if ranked else None,
        runner_up=runner_up_inliers(evidence, order[0]) if ranked else 0,
        duplicate_threshold=conf.duplicate_threshold_for(model),
        similar_threshold=conf.similar_threshold_for(model),
        policy=policy,
    )
    return verdict, ranked
