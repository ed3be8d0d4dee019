"""POST /api/similar/batch/: up to 64 queries in one request, one answer (or error) each."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from similarity.api.errors import similarity_error, validation_message
from similarity.api.parsers import JSONParser
from similarity.api.permissions import UPLOAD_THROTTLE_SCOPE, UploadThrottle
from similarity.api.search import (
    VERIFY_HELP,
    KField,
    SimilarResultSerializer,
    VectorField,
    evidence_fields,
    reject_large_body,
    result_rows,
)
from similarity.errors import InvalidInput, InvalidQuery, SimilarityError
from similarity.selectors.queries import MAX_BATCH_ITEMS, BatchQuery, similar_batch

QUERY_KINDS = ("article_id", "image_url", "vector", "text")
MSG_ONE_KIND = "give exactly one of article_id, image_url, vector or text; got {given}"
MSG_NOT_OBJECT = "each item must be a JSON object; got {kind}"
MSG_NO_BATCH = "POST a JSON object with 'items' (a list of up to 64 queries)"


@extend_schema_serializer(component_name="BatchQuery")
class BatchItemSerializer(serializers.Serializer):
    article_id = serializers.CharField(required=False, max_length=255,
                                       help_text="A catalog article: its stored embedding.")
    image_url = serializers.URLField(required=False, max_length=2048,
                                     help_text="A photo fetched by the server (upload throttle).")
    vector = VectorField(required=False, help_text="A client-computed embedding.")
    model = serializers.CharField(required=False, allow_blank=True, max_length=255,
                                  help_text="The vector's model; checked against the index.")
    text = serializers.CharField(required=False, max_length=10_000,
                                 help_text="A text query (models with a text tower).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [kind for kind in QUERY_KINDS if attrs.get(kind) is not None]
        if len(given) != 1:
            raise serializers.ValidationError(MSG_ONE_KIND.format(given=", ".join(given) or "none"))
        return attrs


class BatchInputSerializer(serializers.Serializer):
    """Parses the envelope; items are validated one by one, so a bad item errs alone."""

    items = serializers.ListField(child=serializers.JSONField(), min_length=1,
                                  max_length=MAX_BATCH_ITEMS)
    k = KField(required=False, default=None)
    category = serializers.CharField(required=False, allow_blank=True, default=None)
    collapse = serializers.BooleanField(required=False, default=False)
    exclude_self = serializers.BooleanField(required=False, default=False)
    verify = serializers.BooleanField(required=False, default=False,
                                      help_text=VERIFY_HELP + " Applies to image_url items.")


@extend_schema_serializer(component_name="BatchRequest")
class BatchRequestSchema(BatchInputSerializer):
    """The documented request: items as BatchQuery objects."""

    # many=True makes a ListSerializer, which takes the length bounds; the stubs see a
    # BatchItemSerializer.
    items = BatchItemSerializer(  # type: ignore[call-arg,assignment]
        many=True, min_length=1, max_length=MAX_BATCH_ITEMS
    )


@extend_schema_serializer(component_name="BatchItemError")
class BatchErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    # A field named "fields": DRF's metaclass takes declared fields off the class, so it
    # does not shadow Serializer.fields at run time; the stubs cannot know.
    fields = serializers.DictField(required=False)  # type: ignore[assignment]
    article_id = serializers.CharField(required=False)
    reason = serializers.CharField(required=False)


@extend_schema_serializer(component_name="BatchAnswer")
class BatchAnswerSerializer(serializers.Serializer):
    article_id = serializers.CharField(allow_null=True, help_text="The query article, if any.")
    status = serializers.IntegerField(help_text="200, or the HTTP status of this item's error.")
    results = SimilarResultSerializer(many=True, required=False)
    verdict = serializers.ChoiceField(choices=["same", "similar", "new"], required=False,
                                      help_text="verify=true, image_url items only.")
    error = BatchErrorSerializer(required=False)


@extend_schema_serializer(component_name="BatchResponse")
class BatchOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    index_build = serializers.CharField()
    results = BatchAnswerSerializer(many=True, help_text="One answer per item, in order.")


class SimilarBatchApi(APIView):
    """Many queries, one request: stored articles, photo URLs, client vectors and texts.

    200 whenever the request itself is valid; each item answers its results or its own
    ``error`` (with the status it would have had alone). Vectors are searched in one Faiss
    call. Each ``image_url`` item counts against the upload throttle; items over it
    answer ``throttled`` (429).
    """

    parser_classes = [JSONParser]
    throttle_scope = UPLOAD_THROTTLE_SCOPE
    error_statuses = {"post": (400, 413, 415, 503)}

    def get_throttles(self) -> list[BaseThrottle]:
        return []  # counted per image_url item, in post()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        reject_large_body(request, empty_message=f"empty request body: {MSG_NO_BATCH}")
        super().initial(request, *args, **kwargs)

    @extend_schema(request=BatchRequestSchema, responses=BatchOutputSerializer)
    def post(self, request: Request) -> Response:
        if not hasattr(request.data, "get"):
            raise InvalidQuery(MSG_NO_BATCH)
        envelope = BatchInputSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        options = envelope.validated_data
        items = [_item(raw) for raw in options.pop("items")]
        throttle = UploadThrottle()
        result = similar_batch(
            items=items, **options,
            allow_fetch=lambda: throttle.allow_request(request, self),
        )
        answers = []
        for answer in result.answers:
            if answer.error is not None:
                status, body = similarity_error(answer.error, user=request.user)
                answers.append({"article_id": answer.article_id, "status": status, **body})
            else:
                rows = result_rows(answer.results or [], collapsed=result.collapsed,
                                   request=request)
                extra: dict[str, Any] = {}
                if answer.verdict is not None:
                    extra["verdict"] = answer.verdict
                    for row, evidence in zip(rows, answer.evidence or [], strict=False):
                        row.update(evidence_fields(evidence))
                answers.append({"article_id": answer.article_id, "status": 200,
                                "results": rows, **extra})
        return Response({"model": result.model, "index_build": result.index_build,
                         "results": answers})


def _item(raw: Any) -> BatchQuery | SimilarityError:
    if not isinstance(raw, dict):
        return InvalidInput(MSG_NOT_OBJECT.format(kind=type(raw).__name__))
    serializer = BatchItemSerializer(data=raw)
    if not serializer.is_valid():
        fields = dict(serializer.errors)
        return InvalidInput(validation_message(fields), fields=fields)
    return BatchQuery(**serializer.validated_data)
