"""Search by photo for the admin: one photo (uploaded bytes or an image URL) ranked against
the current index by ``photo_match`` (what the API's ``POST /api/similar/`` uses with
verify), verified by default (VERIFY), with a verdict a buyer can act on, each candidate's
evidence and a small preview of the photo."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

from lookalike_core.images import ImageValidationError, image_decode_reduced
from lookalike_core.imaging import to_rgb

from similarity.conf import similarity_settings
from similarity.engine.verification import PairEvidence
from similarity.errors import InvalidImageQuery, InvalidQuery
from similarity.selectors.queries import image_url_fetch
from similarity.selectors.search import SimilarResult
from similarity.selectors.uploads import upload_decode_slot
from similarity.selectors.verification import photo_match

PREVIEW_SIDE = 240
MSG_ONE_PHOTO = "give a photo: upload a file or paste its URL (not both)"
MSG_TOO_LARGE = "upload of {size} bytes is larger than the limit of {limit} bytes"


@dataclass(frozen=True)
class PhotoSearchResult:
    model: str
    index_build: str
    verdict: str  # SAME, SIMILAR or NEW (photo_match: verified, else by distance)
    same_threshold: float
    similar_threshold: float
    results: list[SimilarResult]
    preview: str  # the photo as a small JPEG data: URI
    evidence: list[PairEvidence | None] = field(default_factory=list)  # aligned with results
    verified: bool = False


def photo_search(*, image: bytes | None = None, image_url: str | None = None,
                 k: int | None = None) -> PhotoSearchResult:
    """The k catalog articles nearest one photo, given as bytes or fetched from ``image_url``
    (SSRF-guarded, under the upload limits: ``image_url_fetch``), with its verdict.

    Raises InvalidQuery (no photo, both, too large, not an image, URL refused or failed),
    IndexNotReady, UploadsBusy: each says what is wrong.
    """
    if (image is None) == (image_url is None):
        raise InvalidQuery(MSG_ONE_PHOTO)
    conf = similarity_settings()
    if image_url is not None:
        image = image_url_fetch(url=image_url)
    assert image is not None
    if len(image) > conf.upload_max_bytes:
        raise InvalidQuery(MSG_TOO_LARGE.format(size=len(image), limit=conf.upload_max_bytes))
    found = photo_match(image=image, k=k)  # the API's ranking and verification
    return PhotoSearchResult(
        model=found.model, index_build=found.index_build, verdict=found.verdict,
        same_threshold=conf.duplicate_threshold_for(found.model),
        similar_threshold=conf.similar_threshold_for(found.model),
        results=[item.result for item in found.results],
        evidence=[item.evidence for item in found.results], verified=found.verified,
        preview=_preview(image),
    )


def _preview(data: bytes) -> str:
    """A small JPEG of the photo as a data: URI (the admin shows what was searched)."""
    conf = similarity_settings()
    with upload_decode_slot():
        try:
            image = to_rgb(image_decode_reduced(data, max_pixels=conf.upload_max_pixels,
                                                min_side=PREVIEW_SIDE))
        except ImageValidationError as exc:
            raise InvalidImageQuery(f"image: {exc}") from exc
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
