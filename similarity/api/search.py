"""Similarity search endpoints: by catalog article, by photo (upload or URL), vector or text."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from lookalike_core.match_report import VERDICTS
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from catalog.api.articles import media_url
from similarity.api.errors import EmptyUpload, LengthRequired, UploadTooLarge
from similarity.api.parsers import JSONParser
from similarity.api.permissions import UPLOAD_THROTTLE_SCOPE, UploadThrottle
from similarity.conf import similarity_settings
from similarity.engine.verification import PairEvidence
from similarity.errors import InvalidQuery
from similarity.selectors.queries import (
    photo_match_url,
    similar_to_image_url,
    similar_to_vector,
    verify_options_check,
)
from similarity.selectors.search import (
    SearchResult,
    SimilarResult,
    similar_to_article,
    similar_to_image,
    similar_to_text,
)
from similarity.selectors.validation import validate_k
from similarity.selectors.verification import PhotoMatch, photo_match

# Room for the multipart envelope (boundaries, headers, the k and category fields) around
# the file itself when judging a request by its Content-Length.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MSG_TOO_LARGE = "upload of {size} bytes is larger than the limit of {limit} bytes"
MSG_NO_QUERY = "give a text query (?text=...) or POST an image file as multipart field 'image'"
MSG_NO_IMAGE = (
    "POST one of: the image file as multipart field 'image', 'image_url' or 'vector' "
    "(fields received: {fields})"
)
MSG_TWO_QUERIES = "give only one of 'image', 'image_url' and 'vector'; got {fields}"
MSG_VERIFY_VECTOR = "verify needs a photo ('image' or 'image_url'): a vector has none"
VERIFY_HELP = (
    "Verify the global short list against the photo with local features (keypoints and a "
    "geometric fit): verified articles first, a verdict (same / similar / new) and each "
    "result's evidence (inliers, inlier_ratio). Photos only; not with collapse."
)
MSG_VECTOR_FORM = "vector must be a list of numbers (JSON array, or comma-separated in a form)"
MSG_LENGTH_REQUIRED = (
    "uploads need a Content-Length header; chunked transfer encoding is not accepted"
)
MSG_EMPTY_BODY = (
    "empty request body: POST the image file as multipart field 'image', or JSON with "
    "'image_url' or 'vector'"
)


@extend_schema_field(OpenApiTypes.INT)
class KField(serializers.Field):
    """Number of results: an integer between 1 and LOOKALIKE MAX_K (default DEFAULT_K)."""

    def to_internal_value(self, data: Any) -> int:
        try:
            return validate_k(data)
        except InvalidQuery as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field({"type": "array", "items": {"type": "number"}, "minItems": 1})
class VectorField(serializers.Field):
    """A list of numbers: a JSON array, or in a form a JSON array or comma-separated text.

    Values are checked against the index (length, finiteness) by the selector.
    """

    def to_internal_value(self, data: Any) -> list[float]:
        if isinstance(data, str):
            text = data.strip().removeprefix("[").removesuffix("]")
            try:
                return [float(part) for part in text.split(",")] if text.strip() else []
            except ValueError:
                raise serializers.ValidationError(MSG_VECTOR_FORM) from None
        if not isinstance(data, list) or not all(
            isinstance(value, int | float) and not isinstance(value, bool) for value in data
        ):
            raise serializers.ValidationError(MSG_VECTOR_FORM)
        return [_float(value) for value in data]

    def to_representation(self, value: list[float]) -> list[float]:
        return value


def _float(value: int | float) -> float:
    """``value`` as a float; a JSON integer past float's range is infinite (then refused as
    not finite, like 1e999), not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


class FoldedDuplicateSerializer(serializers.Serializer):
    article_id = serializers.CharField()
    distance = serializers.FloatField(help_text="Cosine distance to the result it was folded into.")


class MatchedImageSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="0 = the article's primary image.")
    image_url = serializers.URLField(help_text="The photo's URL in the catalog feed.")
    score = serializers.FloatField(help_text="Cosine similarity of this photo to the query.")


class SimilarResultSerializer(serializers.Serializer):
    article_id = serializers.CharField()
    title = serializers.CharField()
    category = serializers.CharField()
    image_url = serializers.CharField(help_text="Where the catalog says the image comes from "
                                      "(an http(s) URL, or file:// for a folder import).")
    image = serializers.URLField(
        allow_null=True,
        help_text="The stored copy of the image, served here (null before it is downloaded).",
    )
    distance = serializers.FloatField(help_text="Cosine distance, 0 = same direction.")
    score = serializers.FloatField(help_text="Cosine similarity, 1 - distance.")
    duplicates = FoldedDuplicateSerializer(
        many=True, required=False,
        help_text="With collapse=true only: worse-ranked results within the model's duplicate "
        "threshold of this one, folded into it.",
    )
    inliers = serializers.IntegerField(
        required=False, allow_null=True,
        help_text="With verify=true only: keypoint matches consistent with one geometric map "
        "(the evidence that this is the photographed article); null when not verified.")
    inlier_ratio = serializers.FloatField(
        required=False, allow_null=True,
        help_text="With verify=true only: inliers over the ratio-test matches.")
    matched_image = MatchedImageSerializer(
        allow_null=True,
        help_text="Which of the article's photos matched the query best (articles with "
        "several photos are searched by their combination).",
    )


class SearchOutputSerializer(serializers.Serializer):
    article_id = serializers.CharField(allow_null=True, help_text="The query article, if any.")
    model = serializers.CharField()
    index_build = serializers.CharField()
    verdict = serializers.ChoiceField(
        choices=[v for v in VERDICTS if v != "error"], required=False,
        help_text="With verify=true only: same (verified: this article), similar (close, "
        "unverified), new (nothing close).")
    results = SimilarResultSerializer(many=True)


def result_rows(
    results: list[SimilarResult], *, collapsed: bool, request: Request
) -> list[dict[str, Any]]:
    """Result dicts without per-row serializer overhead (hot path); ``image`` is the stored
    copy's absolute URL, whatever the article's source (a download or a folder import)."""
    rows = []
    for row in results:
        data: dict[str, Any] = {
            "article_id": row.article_id,
            "title": row.title,
            "category": row.category,
            "image_url": row.image_url,
            "image": media_url(request, row.image),
            "distance": row.distance,
            "score": row.score,
            "matched_image": _matched(row),
        }
        if collapsed:
            data["duplicates"] = [
                {"article_id": d.article_id, "distance": d.distance} for d in row.duplicates
            ]
        rows.append(data)
    return rows


def evidence_fields(evidence: PairEvidence | None) -> dict[str, Any]:
    return {"inliers": None if evidence is None else evidence.inliers,
            "inlier_ratio": None if evidence is None else round(evidence.inlier_ratio, 4)}


def photo_match_response(match: PhotoMatch, *, request: Request) -> Response:
    rows = result_rows([item.result for item in match.results], collapsed=False,
                       request=request)
    for row, item in zip(rows, match.results, strict=True):
        row.update(evidence_fields(item.evidence))
    return Response({"article_id": None, "model": match.model,
                     "index_build": match.index_build, "verdict": match.verdict,
                     "results": rows})


def _matched(row: SimilarResult) -> dict[str, Any] | None:
    matched = row.matched_image
    if matched is None:
        return None
    return {"position": matched.position, "image_url": matched.image_url, "score": matched.score}


def search_response(result: SearchResult, request: Request) -> Response:
    return Response(
        {
            "article_id": result.article_id,
            "model": result.model,
            "index_build": result.index_build,
            "results": result_rows(result.results, collapsed=result.collapsed, request=request),
        }
    )


class ArticleSimilarApi(APIView):
    """GET /api/articles/<article_id>/similar/ — nearest articles to a catalog article."""

    error_statuses = {"get": (400, 404, 409, 503)}

    class FilterSerializer(serializers.Serializer):
        k = KField(required=False, default=None)
        category = serializers.CharField(required=False, allow_blank=True, default=None)
        exclude_self = serializers.BooleanField(required=False, default=False)
        collapse = serializers.BooleanField(
            required=False, default=False,
            help_text="Fold near-copies (within the model's duplicate threshold) of a "
            "better-ranked result into it; k results are still returned when enough exist.",
        )

    @extend_schema(parameters=[FilterSerializer], responses=SearchOutputSerializer)
    def get(self, request: Request, article_id: str) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        result = similar_to_article(article_id=article_id, **filters.validated_data)
        return search_response(result, request)


class SimilarSearchApi(APIView):
    """/api/similar/ — GET ?text=... (models with a text tower); POST a photo or a vector.

    POST takes one of: a multipart ``image`` upload, an ``image_url`` (fetched here with the
    catalog's guarded downloader) or a client-computed ``vector`` (with the ``model`` it came
    from, checked against the index), as JSON or form fields. Every POST counts against the
    upload throttle. One URL, two operations: each validates its input, calls one selector.
    """

    parser_classes = [JSONParser, MultiPartParser, FormParser]
    throttle_scope = UPLOAD_THROTTLE_SCOPE
    error_statuses = {"get": (400, 503), "post": (400, 411, 413, 415, 429, 503)}

    class TextFilterSerializer(serializers.Serializer):
        text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=True)
        k = KField(required=False, default=None)
        category = serializers.CharField(required=False, allow_blank=True, default=None)
        collapse = serializers.BooleanField(required=False, default=False)

    class ImageInputSerializer(serializers.Serializer):
        image = serializers.FileField(required=False, allow_empty_file=True,
                                      help_text="An image file (multipart only).")
        image_url = serializers.URLField(
            required=False, max_length=2048,
            help_text="http(s) URL of a photo, fetched by the server (private addresses "
            "refused unless DOWNLOAD_ALLOW_PRIVATE).",
        )
        vector = VectorField(required=False, help_text="A client-computed embedding of the "
                             "index's dimension (see GET /api/index/); L2-normalised here.")
        model = serializers.CharField(
            required=False, allow_blank=True, max_length=255,
            help_text="The model the vector came from: the index's model or model_identity.",
        )
        k = KField(required=False, default=None)
        category = serializers.CharField(required=False, allow_blank=True, default=None)
        collapse = serializers.BooleanField(required=False, default=False)
        verify = serializers.BooleanField(required=False, default=False, help_text=VERIFY_HELP)

    def get_throttles(self) -> list[BaseThrottle]:
        # Uploads cost a decode and an embedding each; text queries are cheap by comparison.
        return [UploadThrottle()] if self.request.method == "POST" else []

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if request.method == "POST":
            # Judge the size before anything reads the body (parsing, CSRF checks).
            reject_large_body(request)
        super().initial(request, *args, **kwargs)

    @extend_schema(parameters=[TextFilterSerializer], responses=SearchOutputSerializer)
    def get(self, request: Request) -> Response:
        filters = self.TextFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        text = filters.validated_data.pop("text", "")
        if not text:
            raise InvalidQuery(MSG_NO_QUERY)
        return search_response(similar_to_text(text=text, **filters.validated_data), request)

    @extend_schema(
        request={
            "application/json": ImageInputSerializer,
            "multipart/form-data": ImageInputSerializer,
            "application/x-www-form-urlencoded": ImageInputSerializer,
        },
        responses=SearchOutputSerializer,
    )
    def post(self, request: Request) -> Response:
        if not hasattr(request.data, "get"):  # a JSON array or scalar body
            raise InvalidQuery(MSG_NO_IMAGE.format(fields="none"))
        serializer = self.ImageInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload: UploadedFile | None = data.pop("image", None)
        image_url: str | None = data.pop("image_url", None)
        vector: list[float] | None = data.pop("vector", None)
        model: str = data.pop("model", "")
        given = [name for name, value in (("image", upload), ("image_url", image_url),
                                          ("vector", vector)) if value is not None]
        if len(given) > 1:
            raise InvalidQuery(MSG_TWO_QUERIES.format(fields=", ".join(given)))
        verify: bool = data.pop("verify")
        verify_options_check(verify=verify, collapse=data["collapse"])
        if verify:
            return self._verified(upload, image_url, vector, k=data["k"],
                                  category=data["category"])
        if vector is not None:
            result = similar_to_vector(vector=vector, model=model or None, **data)
            return search_response(result, request)
        if image_url is not None:
            return search_response(similar_to_image_url(image_url=image_url, **data), request)
        if upload is None:
            fields = ", ".join(sorted(request.data)) or "none"
            raise InvalidQuery(MSG_NO_IMAGE.format(fields=fields))
        return search_response(similar_to_image(image=_read_upload(upload), **data), request)

    def _verified(self, upload: UploadedFile | None, image_url: str | None,
                  vector: list[float] | None, *, k: int | None,
                  category: str | None) -> Response:
        if vector is not None:
            raise InvalidQuery(MSG_VERIFY_VECTOR)
        if image_url is not None:
            return photo_match_response(photo_match_url(image_url=image_url, k=k,
                                                        category=category),
                                        request=self.request)
        if upload is None:
            raise InvalidQuery(MSG_NO_IMAGE.format(fields="none"))
        return photo_match_response(photo_match(image=_read_upload(upload), k=k, verify=True,
                                                category=category), request=self.request)


def reject_large_body(request: Request, *, empty_message: str = MSG_EMPTY_BODY) -> None:
    """411 for a chunked body, 400 when empty, 413 when over the limit.

    Django reads no body without a Content-Length: a chunked upload would otherwise look
    like a request with no image at all.
    """
    limit = similarity_settings().upload_max_bytes
    declared = str(request.META.get("CONTENT_LENGTH") or "").strip()
    chunked = "chunked" in str(request.META.get("HTTP_TRANSFER_ENCODING", "")).lower()
    if chunked:
        raise LengthRequired(MSG_LENGTH_REQUIRED)
    try:  # neither header: HTTP says the body is empty
        length = int(declared or 0)
    except ValueError:
        raise LengthRequired(f"invalid Content-Length {declared!r}") from None
    if length <= 0:
        raise EmptyUpload(empty_message)
    if length > limit + MULTIPART_OVERHEAD_BYTES:
        raise UploadTooLarge(MSG_TOO_LARGE.format(size=length, limit=limit))
    content_type = str(request.META.get("CONTENT_TYPE", "")).lower()
    if not content_type.startswith("multipart/"):
        # JSON and url-encoded bodies are read into memory whole: Django refuses them past
        # DATA_UPLOAD_MAX_MEMORY_SIZE with an HTML page; say so in the API's shape first.
        memory_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if memory_limit is not None and length > memory_limit:
            raise UploadTooLarge(MSG_TOO_LARGE.format(size=length, limit=memory_limit))


def _read_upload(upload: UploadedFile) -> bytes:
    """The upload's bytes once their size is checked (decoding happens once, in the selector)."""
    conf = similarity_settings()
    if upload.size is not None and upload.size > conf.upload_max_bytes:
        raise UploadTooLarge(MSG_TOO_LARGE.format(size=upload.size, limit=conf.upload_max_bytes))
    data = upload.read(conf.upload_max_bytes + 1)
    if len(data) > conf.upload_max_bytes:
        raise UploadTooLarge(MSG_TOO_LARGE.format(size=len(data), limit=conf.upload_max_bytes))
    return data
