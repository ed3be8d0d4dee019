"""Queries from clients that embed locally or point at a photo: vectors, image URLs, batches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import requests
from lookalike_core.images import ImageValidationError
from PIL import Image

from catalog.conf import catalog_settings
from catalog.services.fetching import ImageFetchError, download_session, fetch_bytes
from similarity.conf import similarity_settings
from similarity.engine.verification import PairEvidence, VerifyPolicy
from similarity.errors import (
    ImageUrlFailed,
    InvalidQuery,
    QueryThrottled,
    SimilarityError,
)
from similarity.selectors.search import (
    SearchResult,
    SimilarResult,
    article_query,
    category_ids,
    fetch_count,
    image_query_vector,
    query_embedder,
    ranked_results,
    similar_to_query_vector,
    text_query_vector,
)
from similarity.selectors.store import LoadedIndex, get_store
from similarity.selectors.uploads import photo_decode
from similarity.selectors.validation import validate_k
from similarity.selectors.verification import (
    VERIFY_MIN_SIDE,
    PhotoMatch,
    photo_match,
    results_verify,
)

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 64
URL_FETCH_WORKERS = 4  # image_url items of one batch fetched at once
URL_FETCH_RETRIES = 1  # a client is waiting: one retry, not the catalog downloader's three

MSG_VECTOR_TYPE = "vector must be a list of numbers; got {kind}"
MSG_VERIFY_COLLAPSE = "verify and collapse cannot be combined: verification re-ranks the results"
MSG_VECTOR_LENGTH = (
    "vector has {length} values but the index's model {model!r} has dimension {dimension}; "
    "embed with the model GET /api/index/ publishes"
)
MSG_VECTOR_FINITE = "vector value {position} is not a finite number ({value!r})"
MSG_VECTOR_ZERO = "vector is all zeros: it has no direction to compare"
MSG_VECTOR_MODEL = (
    "vector was computed with model {declared!r} but the index holds {model!r} (identity "
    "{identity!r}); vectors of other models are not comparable"
)
MSG_BATCH_SIZE = "items must hold 1 to {limit} queries; got {count}"
MSG_THROTTLED = "image_url fetches are over the upload throttle ({rate}); retry later"


def query_vector_validate(
    loaded: LoadedIndex, values: object, *, model: str | None = None
) -> np.ndarray:
    """A client-computed embedding as a unit float32 query vector, or InvalidQuery saying why.

    Its length must be the index's dimension; ``model``, when declared, must name the
    index's model (its spec, its identity or the identity's name before ``@``). Non-finite
    values and the zero vector are refused; the vector is L2-normalised here.
    """
    manifest = loaded.manifest
    if model and model.strip() not in model_names(loaded):
        raise InvalidQuery(MSG_VECTOR_MODEL.format(
            declared=model, model=manifest.model, identity=manifest.model_identity))
    if isinstance(values, str | bytes | dict) or not isinstance(values, Sequence | np.ndarray):
        raise InvalidQuery(MSG_VECTOR_TYPE.format(kind=type(values).__name__))
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InvalidQuery(MSG_VECTOR_TYPE.format(kind="a list with non-numbers")) from None
    if vector.ndim != 1:
        raise InvalidQuery(MSG_VECTOR_TYPE.format(kind=f"an array of shape {vector.shape}"))
    dimension = int(loaded.index.d)
    if len(vector) != dimension:
        raise InvalidQuery(MSG_VECTOR_LENGTH.format(
            length=len(vector), model=manifest.model, dimension=dimension))
    too_big = np.abs(vector) > np.finfo(np.float32).max  # would become inf in float32
    bad = np.flatnonzero(~np.isfinite(vector) | too_big)
    if bad.size:
        raise InvalidQuery(MSG_VECTOR_FINITE.format(position=int(bad[0]),
                                                    value=float(vector[bad[0]])))
    norm = float(np.linalg.norm(vector))
    if not norm or not np.isfinite(norm):
        raise InvalidQuery(MSG_VECTOR_ZERO)
    return (vector / norm).astype(np.float32)


def model_names(loaded: LoadedIndex) -> set[str]:
    """What a client may declare as ``model`` for this index's vectors."""
    manifest = loaded.manifest
    identity = manifest.model_identity or ""
    return {name for name in (manifest.model, identity, identity.split("@")[0]) if name}


def similar_to_vector(
    *, vector: object, model: str | None = None, k: int | None = None,
    category: str | None = None, collapse: bool = False,
) -> SearchResult:
    """The k articles nearest a client-computed embedding (see ``query_vector_validate``)."""
    k = validate_k(k)
    loaded = get_store().get()
    query = query_vector_validate(loaded, vector, model=model)
    return similar_to_query_vector(loaded, query, k=k, category=category, collapse=collapse)


def similar_to_image_url(
    *, image_url: str, k: int | None = None, category: str | None = None,
    collapse: bool = False,
) -> SearchResult:
    """The k articles nearest the photo at ``image_url``, fetched with the catalog's guard."""
    k = validate_k(k)
    loaded = get_store().get()
    image = image_url_image(url=image_url, min_side=query_embedder(loaded).image_size)
    vector = image_query_vector(loaded, image)
    return similar_to_query_vector(loaded, vector, k=k, category=category, collapse=collapse)


def photo_match_url(*, image_url: str, k: int | None = None,
                    category: str | None = None) -> PhotoMatch:
    """``photo_match`` (ranked and verified) of the photo at ``image_url``, fetched with the
    catalog's guard (``image_url_fetch``)."""
    k = validate_k(k)
    get_store().get()  # IndexNotReady before fetching anything
    return photo_match(image=image_url_fetch(url=image_url), k=k, verify=True,
                       category=category)


_sessions: dict[bool, requests.Session] = {}
_sessions_lock = threading.Lock()


def image_url_image(*, url: str, min_side: int | None) -> Image.Image:
    """The photo at ``url`` decoded as uploads are (one decode, in the upload decode slots,
    under UPLOAD_MAX_PIXELS and the scan limit); ImageUrlFailed says why it cannot be used."""
    data = image_url_fetch(url=url)
    try:
        return photo_decode(data=data, min_side=min_side,
                            max_pixels=similarity_settings().upload_max_pixels)
    except ImageValidationError as exc:
        raise ImageUrlFailed(url, str(exc)) from exc


def image_url_fetch(*, url: str) -> bytes:
    """The bytes at ``url`` (not decoded): the catalog's safe downloader under the upload
    limits.

    Private addresses are refused unless DOWNLOAD_ALLOW_PRIVATE; size is capped by
    UPLOAD_MAX_BYTES, time by DOWNLOAD_TIMEOUT. ImageUrlFailed with the downloader's reason
    otherwise.
    """
    catalog = catalog_settings()
    conf = similarity_settings()
    with _sessions_lock:
        session = _sessions.get(catalog.download_allow_private)
        if session is None:
            session = download_session(workers=URL_FETCH_WORKERS, retries=URL_FETCH_RETRIES,
                                       allow_private=catalog.download_allow_private)
            _sessions[catalog.download_allow_private] = session
    try:
        data, _content_type = fetch_bytes(session, url, timeout=catalog.download_timeout,
                                          max_bytes=conf.upload_max_bytes)
    except ImageFetchError as exc:
        raise ImageUrlFailed(url, str(exc)) from exc
    return data


@dataclass(frozen=True)
class BatchQuery:
    """One item of a batch: exactly one of article_id, image_url, vector or text."""

    article_id: str | None = None
    image_url: str | None = None
    vector: list[float] | None = None
    model: str | None = None
    text: str | None = None


@dataclass
class BatchAnswer:
    """One item's answer: its results, or the error that stopped it (never both)."""

    results: list[SimilarResult] | None = None
    error: SimilarityError | None = None
    article_id: str | None = None
    verdict: str | None = None  # verified photo items only (verify=True)
    evidence: list[PairEvidence | None] | None = None  # aligned with results, same


@dataclass
class BatchResult:
    model: str
    index_build: str
    answers: list[BatchAnswer] = field(default_factory=list)
    collapsed: bool = False


def similar_batch(
    *,
    items: Sequence[BatchQuery | SimilarityError],
    k: int | None = None,
    category: str | None = None,
    collapse: bool = False,
    exclude_self: bool = False,
    verify: bool = False,
    allow_fetch: Callable[[], bool] | None = None,
) -> BatchResult:
    """One answer per item, in order; an item's error never stops the others.

    Items given as a SimilarityError (invalid at the edge) are answered with it. Every
    item becomes a query vector (stored, client-computed, embedded image or text; images
    embedded in one model call), then all are searched in one Faiss call. ``allow_fetch``
    is asked before each image_url fetch (the upload throttle); False answers that item
    with a ``throttled`` error. With ``verify``, image_url items are verified like
    ``photo_match`` (verdict and evidence); the other kinds have no photo to verify.
    """
    k = validate_k(k)
    verify_options_check(verify=verify, collapse=collapse)
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise InvalidQuery(MSG_BATCH_SIZE.format(limit=MAX_BATCH_ITEMS, count=len(items)))
    loaded = get_store().get()
    answers = [BatchAnswer(error=item) if isinstance(item, SimilarityError) else BatchAnswer()
               for item in items]
    vectors: dict[int, np.ndarray] = {}
    own: dict[int, tuple[int, str]] = {}  # article items: position -> (pk, category)
    fetches: dict[int, str] = {}
    for position, item in enumerate(items):
        if isinstance(item, SimilarityError):
            continue
        try:
            if item.article_id is not None:
                query = article_query(loaded, item.article_id)
                answers[position].article_id = query.article_id
                own[position] = (query.pk, query.category)
                vectors[position] = query.vector
            elif item.vector is not None:
                vectors[position] = query_vector_validate(loaded, item.vector, model=item.model)
            elif item.text is not None:
                vectors[position] = text_query_vector(loaded, item.text)
            elif item.image_url is not None:
                if allow_fetch is not None and not allow_fetch():
                    rate = similarity_settings().upload_throttle
                    raise QueryThrottled(MSG_THROTTLED.format(rate=rate))
                fetches[position] = item.image_url
            else:
                raise InvalidQuery("give one of article_id, image_url, vector or text")
        except SimilarityError as exc:
            answers[position].error = exc
    photos: dict[int, Image.Image] = {}
    vectors.update(_fetched_vectors(loaded, fetches, answers, photos, verify=verify))
    policy = VerifyPolicy()
    wanted = max([k, *([policy.short_list] * bool(photos))])  # verification's short list
    _search_all(loaded, vectors, own, answers, k=wanted, category=category, collapse=collapse,
                exclude_self=exclude_self)
    _answers_verify(loaded, answers, photos, k=k, policy=policy)
    return BatchResult(model=loaded.manifest.model, index_build=loaded.name, answers=answers,
                       collapsed=collapse)


def verify_options_check(*, verify: bool, collapse: bool) -> None:
    """InvalidQuery for options that cannot go together."""
    if verify and collapse:
        raise InvalidQuery(MSG_VERIFY_COLLAPSE)


def _answers_verify(loaded: LoadedIndex, answers: list[BatchAnswer],
                    photos: dict[int, Image.Image], *, k: int, policy: VerifyPolicy) -> None:
    """Photo items (``photos``) verified and cut to k; the others cut to k."""
    for position, answer in enumerate(answers):
        if answer.results is None:
            continue
        if position in photos:
            answer.verdict, ranked = results_verify(loaded, photos[position], answer.results,
                                                    k=k, verify=True, policy=policy)
            answer.results = [item.result for item in ranked]
            answer.evidence = [item.evidence for item in ranked]
        else:
            answer.results = answer.results[:k]


def _fetched_vectors(
    loaded: LoadedIndex, fetches: dict[int, str], answers: list[BatchAnswer],
    photos: dict[int, Image.Image], *, verify: bool,
) -> dict[int, np.ndarray]:
    """Fetch and decode the image_url items in threads, then embed them in one model call;
    with ``verify`` the decoded photos are kept in ``photos`` (by position)."""
    if not fetches:
        return {}
    embedder = query_embedder(loaded)
    min_side = max(embedder.image_size or 0, VERIFY_MIN_SIDE if verify else 0)

    def load(url: str) -> Image.Image:
        return image_url_image(url=url, min_side=min_side)

    images: dict[int, Image.Image] = {}
    with ThreadPoolExecutor(max_workers=min(URL_FETCH_WORKERS, len(fetches))) as pool:
        futures = {position: pool.submit(load, url) for position, url in fetches.items()}
        for position, future in futures.items():
            try:
                images[position] = future.result()
            except SimilarityError as exc:
                answers[position].error = exc
    if not images:
        return {}
    if verify:
        photos.update(images)
    embedded = embedder.embed_images(list(images.values()))
    return dict(zip(images, embedded, strict=True))


def _search_all(
    loaded: LoadedIndex, vectors: dict[int, np.ndarray], own: dict[int, tuple[int, str]],
    answers: list[BatchAnswer], *, k: int, category: str | None, collapse: bool,
    exclude_self: bool,
) -> None:
    """One Faiss call for every item's vector; article items lead with themselves."""
    from similarity.engine.index import knn_query

    if not vectors:
        return
    positions = sorted(vectors)
    wanted = fetch_count(loaded, k, collapse=collapse)
    queries = np.stack([vectors[p] for p in positions]).astype(np.float32)
    # One more than wanted: an article item drops itself from its own answer.
    found = knn_query(loaded.index, queries, wanted + 1, allowed_ids=category_ids(category))
    for position, neighbors in zip(positions, found, strict=True):
        ids, distances = neighbors.ids, neighbors.distances
        if position in own:
            pk, own_category = own[position]
            keep = ids != pk
            ids, distances = ids[keep], distances[keep]
            if not exclude_self and (not category or category == own_category):
                ids = np.concatenate([np.array([pk], dtype=np.int64), ids])
                distances = np.concatenate([np.zeros(1, dtype=np.float32), distances])
        ids, distances = ids[:wanted], distances[:wanted]
        answers[position].results = ranked_results(loaded, ids, distances, k=k,
                                                   collapse=collapse, query=vectors[position])
