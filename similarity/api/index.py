"""Index endpoints: the serving build and its latest build record; staff-only rebuilds."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from similarity.models import BuildShard, IndexBuild
from similarity.selectors.index import index_state
from similarity.services.builds.queue import index_build_enqueue

MSG_ERROR_FOR_STAFF = "the build failed; its error is shown to staff users"


class IndexBuildSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = IndexBuild
        fields = [
            "id",
            "url",
            "status",
            "trigger",
            "model",
            "model_source",
            "index_type",
            "full",
            "download",
            *IndexBuild.SUMMARY_FIELDS,
            "error",
            "created_at",
            "started_at",
            "heartbeat_at",
            "progress_at",
            "phase",
            "finished_at",
        ]

    def get_url(self, build: IndexBuild) -> str:
        return self.context["request"].build_absolute_uri(build_url(build))


@extend_schema_serializer(component_name="Preprocessing")
class PreprocessingSerializer(serializers.Serializer):
    client_computable = serializers.BooleanField(
        help_text="Whether a client can compute the index's vectors itself from the model's "
        "published weights and these steps."
    )
    image_size = serializers.IntegerField(allow_null=True)
    resize = serializers.CharField(allow_blank=True)
    crop = serializers.CharField(allow_blank=True)
    resample = serializers.CharField(allow_blank=True)
    rescale = serializers.FloatField(allow_null=True, help_text="Pixel scale, e.g. 1/255.")
    mean = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    std = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    colour_order = serializers.CharField()
    layout = serializers.CharField(allow_blank=True)
    description = serializers.CharField()
    spec = serializers.JSONField(
        allow_null=True, help_text="The machine-readable preprocessing (lookalike_core.pixels."
        "PixelSpec as JSON) the server and the light client both run; null when the model "
        "has none (the classic descriptor, a processor the core cannot reproduce)."
    )


@extend_schema_serializer(component_name="IndexCurrent")
class IndexCurrentSerializer(serializers.Serializer):
    name = serializers.CharField()
    model = serializers.CharField()
    model_identity = serializers.CharField(
        help_text="Model name plus a fingerprint of its weights: vectors are comparable only "
        "under the same identity."
    )
    preprocessing = PreprocessingSerializer(
        allow_null=True, help_text="How images become model inputs (null when the model "
        "cannot be loaded by this process)."
    )
    count = serializers.IntegerField()
    dimension = serializers.IntegerField()
    built_at = serializers.DateTimeField(allow_null=True)
    index_type = serializers.CharField()
    factory = serializers.CharField()
    supports_text = serializers.BooleanField()
    recall_at_10 = serializers.FloatField(allow_null=True)


def build_url(build: IndexBuild) -> str:
    return reverse("api:index-build-detail", args=[build.pk])


class IndexApi(APIView):
    """GET /api/index/ — the build being served (null when none) and the latest build record."""

    error_statuses: dict[str, tuple[int, ...]] = {"get": ()}  # only those of every operation

    @extend_schema_serializer(component_name="IndexState")
    class OutputSerializer(serializers.Serializer):
        current = IndexCurrentSerializer(allow_null=True)
        latest_build = IndexBuildSerializer(allow_null=True)

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        state = index_state()
        latest = state.latest_build
        context = {"request": request}
        latest_data = IndexBuildSerializer(latest, context=context).data if latest else None
        if latest_data and latest_data["error"] and not request.user.is_staff:
            # A build error may name paths, hosts or models: staff read it on the build's page.
            latest_data["error"] = MSG_ERROR_FOR_STAFF
        current = state.current
        return Response(
            {
                "current": IndexCurrentSerializer(current).data if current else None,
                "latest_build": latest_data,
            }
        )


MSG_QUEUED = "build #{id} queued"
MSG_JOINED = "a rebuild was already queued: this request joined build #{id}"


class IndexRebuildApi(APIView):
    """POST /api/index/rebuild/ (staff) — queue a background build; 202 with its status URL.

    At most one build is queued: while one is, further requests join it (same id,
    ``joined: true``); ``full``/``download`` asked by any of them apply to it.
    """

    permission_classes = [IsAdminUser]
    error_statuses = {"post": (400, 409, 415, 503)}

    @extend_schema_serializer(component_name="IndexRebuildRequest")
    class InputSerializer(serializers.Serializer):
        full = serializers.BooleanField(required=False, default=False)
        download = serializers.BooleanField(required=False, default=True)

    @extend_schema_serializer(component_name="IndexRebuildAccepted")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()
        status_url = serializers.URLField()
        joined = serializers.BooleanField(help_text="True: joined the build already queued.")
        detail = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={202: OutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        queued = index_build_enqueue(trigger="api", **serializer.validated_data)
        build = queued.build
        location = request.build_absolute_uri(build_url(build))
        message = MSG_JOINED if queued.joined else MSG_QUEUED
        return Response(
            {
                "id": build.pk,
                "status": build.status,
                "status_url": location,
                "joined": queued.joined,
                "detail": message.format(id=build.pk),
            },
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )


class BuildShardSerializer(serializers.ModelSerializer):
    worker = serializers.CharField(read_only=True, help_text="host:pid of the last claim.")
    duration = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = BuildShard
        fields = [
            "id", "kind", "first_pk", "last_pk", "article_count", "state", "worker", "device",
            "attempts", "lease_expires_at", "started_at", "finished_at", "duration",
            "done_count", "reused_count", "failed_count", "error",
        ]


@extend_schema_serializer(component_name="IndexBuildDetail")
class IndexBuildDetailSerializer(IndexBuildSerializer):
    shards = BuildShardSerializer(many=True, read_only=True, help_text=(
        "A distributed build's shards (download, then embed); empty for a local build."
    ))

    class Meta(IndexBuildSerializer.Meta):
        fields = [*IndexBuildSerializer.Meta.fields, "timings", "shards"]


class IndexBuildDetailApi(APIView):
    """GET /api/index/builds/<id>/ (staff) — one build record: status, counts, error, and
    the shards of a distributed build (state, worker, attempts, timings)."""

    permission_classes = [IsAdminUser]
    error_statuses = {"get": (404,)}

    @extend_schema(responses=IndexBuildDetailSerializer)
    def get(self, request: Request, build_id: int) -> Response:
        build = get_object_or_404(IndexBuild.objects.prefetch_related("shards"), pk=build_id)
        return Response(IndexBuildDetailSerializer(build, context={"request": request}).data)
