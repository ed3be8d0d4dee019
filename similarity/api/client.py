"""GET /api/index/client/ and its model file: what the light client needs to embed locally.

Both answer an ETag and honour If-None-Match (304), so a client checks its cached model
with one small request. The weights are not for anonymous readers: staff only when the API
is open, any token (or session) when LOOKALIKE API_AUTH is "token".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from django.http import FileResponse, HttpResponse, HttpResponseBase
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from similarity.conf import similarity_settings
from similarity.errors import ClientModelUnavailable
from similarity.selectors.client_model import ClientModel, client_model_get

ONNX_MEDIA_TYPE = "application/octet-stream"
CACHE_CONTROL = "private, no-cache"  # keep a copy, but revalidate it (ETag) on every use
MSG_NO_FILE = "the index's model ({model!r}) has no file to download: the core computes it"


class ModelAccess(BasePermission):
    """Staff when API_AUTH is "open" (the weights are not public); any signed-in client
    (token or session) when it is "token"."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return bool(similarity_settings().api_auth == "token" or user.is_staff)


class _AcceptOnly(DefaultContentNegotiation):
    """Negotiates on the Accept header alone: ``?format=`` is ignored (not a 404)."""

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)  # type: ignore[assignment]  # the one key read


class OnnxRenderer(BaseRenderer):
    """Lets ``Accept: application/octet-stream`` reach the file view; errors stay JSON."""

    media_type = ONNX_MEDIA_TYPE
    format = "onnx"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: Mapping[str, Any] | None = None) -> bytes:
        return JSONRenderer().render(data)


@extend_schema_serializer(component_name="ClientModelFile")
class ModelFileSerializer(serializers.Serializer):
    url = serializers.URLField(help_text="GET it (same credentials); ETag = its sha256.")
    sha256 = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes.")
    runtime = serializers.CharField(help_text="onnx (fp32) or onnx-int8: the gated runtime.")
    input = serializers.CharField(help_text="Input name: NCHW float32 pixels.")
    output = serializers.CharField(help_text="Output name: (n, dimension) raw vectors.")


@extend_schema_serializer(component_name="ClientModel")
class ClientModelSerializer(serializers.Serializer):
    index_build = serializers.CharField()
    model = serializers.CharField()
    model_identity = serializers.CharField(
        help_text="Send it with every vector; a change means the client must refetch.")
    dimension = serializers.IntegerField()
    kind = serializers.ChoiceField(
        choices=["onnx", "classic"],
        help_text="onnx: run `preprocessing` then the file; classic: lookalike_core.classic.")
    image_size = serializers.IntegerField(allow_null=True,
                                          help_text="Smallest side worth decoding.")
    preprocessing = serializers.JSONField(
        allow_null=True, help_text="lookalike_core.pixels.PixelSpec as JSON (null: classic).")
    duplicate_threshold = serializers.FloatField(
        help_text="Nearest distance at or under it: verdict duplicate.")
    similar_threshold = serializers.FloatField(
        help_text="At or under it: similar; above: new.")
    max_k = serializers.IntegerField()
    file = ModelFileSerializer(allow_null=True)


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("If-None-Match", "")
    return etag in {tag.strip() for tag in wanted.split(",")} or wanted.strip() == "*"


def _conditional(response: HttpResponseBase, etag: str) -> HttpResponseBase:
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    response["Vary"] = "Authorization, Cookie"
    return response


def _described(model: ClientModel, request: Request) -> dict[str, Any]:
    file = model.file
    return {
        "index_build": model.index_build,
        "model": model.model,
        "model_identity": model.model_identity,
        "dimension": model.dimension,
        "kind": model.kind,
        "image_size": model.image_size,
        "preprocessing": model.preprocessing,
        "duplicate_threshold": model.duplicate_threshold,
        "similar_threshold": model.similar_threshold,
        "max_k": model.max_k,
        "file": None if file is None else {
            "url": request.build_absolute_uri(reverse("api:index-client-model")),
            "sha256": file.sha256,
            "size": file.size,
            "runtime": file.runtime,
            "input": "pixel_values",
            "output": "embedding",
        },
    }


class IndexClientApi(APIView):
    """GET /api/index/client/ — the current index's model for clients that embed locally:
    identity, dimension, preprocessing as data, verdict thresholds and the gated ONNX file.

    409 ``client_model_unavailable`` when no client can compute the index's vectors;
    304 when If-None-Match names the current ETag.
    """

    permission_classes = [ModelAccess]
    error_statuses = {"get": (409, 503)}

    @extend_schema(responses={200: ClientModelSerializer,
                              304: OpenApiResponse(description="Not modified (ETag).")})
    def get(self, request: Request) -> HttpResponseBase:
        model = client_model_get()
        etag = f'"{model.fingerprint()}"'
        if _not_modified(request, etag):
            return _conditional(HttpResponse(status=304), etag)
        return _conditional(Response(_described(model, request)), etag)


class IndexClientModelApi(APIView):
    """GET /api/index/client/model.onnx — the gated ONNX export of the index's model.

    The ETag is the file's sha256 (quoted); 304 when If-None-Match names it. 409 for a
    model without a file (classic) or without a client path.
    """

    permission_classes = [ModelAccess]
    renderer_classes = [JSONRenderer, OnnxRenderer]
    content_negotiation_class = _AcceptOnly
    error_statuses = {"get": (409, 503)}

    def handle_exception(self, exc: Exception) -> Response:
        """Errors are JSON with a JSON content type, whatever the client accepted."""
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(responses={(200, ONNX_MEDIA_TYPE): OpenApiTypes.BINARY,
                              304: OpenApiResponse(description="Not modified (ETag).")})
    def get(self, request: Request) -> HttpResponseBase:
        model = client_model_get()
        if model.file is None:
            raise ClientModelUnavailable(MSG_NO_FILE.format(model=model.model))
        etag = f'"{model.file.sha256}"'
        if _not_modified(request, etag):
            return _conditional(HttpResponse(status=304), etag)
        response = FileResponse(model.file.path.open("rb"), content_type=ONNX_MEDIA_TYPE,
                                as_attachment=True, filename="model.onnx")
        response["X-Model-Identity"] = model.model_identity
        return _conditional(response, etag)
