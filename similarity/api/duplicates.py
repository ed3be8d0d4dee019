"""Duplicates: groups of the current index (GET /api/duplicates/) and one article's
(GET /api/articles/<id>/duplicates/)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.api.articles import media_url
from similarity.api.permissions import StaffAccess
from similarity.selectors.duplicates import (
    DuplicateGroup,
    article_duplicates_find,
    duplicate_groups_find,
)


class DuplicatePagination(LimitOffsetPagination):
    default_limit = 20
    max_limit = 200


class DuplicatesApi(APIView):
    """Groups of articles whose photos are within ``threshold`` cosine distance of each other.

    400 for a threshold outside (0, 0.25] and ``too_many_pairs`` when it lets through more pairs
    than duplicate review can use, 503 when no index has been built. Each group lists its 50
    closest pairs; ``pair_count`` is the real number. Pairs a reviewer marked "not duplicates"
    are left out; fully reviewed groups are hidden.
    """

    pagination_class = DuplicatePagination  # the schema declares the page envelope
    permission_classes = [StaffAccess]  # review data: staff only, also with API_AUTH=open
    error_statuses = {"get": (400, 503)}

    @extend_schema_serializer(component_name="DuplicateMember")
    class MemberSerializer(serializers.Serializer):
        article_id = serializers.CharField()
        title = serializers.CharField()
        category = serializers.CharField()
        image_url = serializers.CharField()
        image = serializers.SerializerMethodField()

        def get_image(self, member: Any) -> str | None:
            return media_url(self.context["request"], member.image)

    @extend_schema_serializer(component_name="DuplicatePair")
    class PairSerializer(serializers.Serializer):
        first = serializers.CharField()
        second = serializers.CharField()
        distance = serializers.FloatField()

    @extend_schema_serializer(component_name="DuplicateGroup")
    class OutputSerializer(serializers.Serializer):
        size = serializers.SerializerMethodField()
        representative = serializers.CharField(
            help_text="The member the group was built around (most near neighbors); every "
            "member is within the threshold of it and of each other."
        )
        max_distance = serializers.FloatField()
        pair_count = serializers.IntegerField(help_text="All pairs of the group; `pairs` lists "
                                              "only the closest (PAIRS_LISTED).")
        articles = serializers.SerializerMethodField()
        pairs = serializers.SerializerMethodField()

        def get_size(self, group: DuplicateGroup) -> int:
            return len(group.members)

        def get_articles(self, group: DuplicateGroup) -> list[dict[str, Any]]:
            return list(DuplicatesApi.MemberSerializer(
                group.members, many=True, context=self.context
            ).data)

        def get_pairs(self, group: DuplicateGroup) -> list[dict[str, Any]]:
            return list(DuplicatesApi.PairSerializer(group.pairs, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("threshold", float, description="Cosine distance; "
                                     "default: DUPLICATE_THRESHOLD for the index's model.")],
        responses=OutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        threshold = request.query_params.get("threshold")
        report = duplicate_groups_find(threshold=None if threshold in (None, "") else threshold)
        paginator = DuplicatePagination()
        page = paginator.paginate_queryset(report.groups, request, view=self)
        data = self.OutputSerializer(page, many=True, context={"request": request}).data
        response = paginator.get_paginated_response(data)
        response.data.update(
            {"threshold": report.threshold, "model": report.model,
             "index_build": report.build_name}
        )
        return response


THRESHOLD_PARAMETER = OpenApiParameter(
    "threshold", float, description="Cosine distance in (0, 0.25]; default: "
    "DUPLICATE_THRESHOLD for the index's model.",
)


@extend_schema_serializer(component_name="ArticleDuplicate")
class ArticleDuplicateSerializer(serializers.Serializer):
    article_id = serializers.CharField(source="member.article_id")
    title = serializers.CharField(source="member.title")
    category = serializers.CharField(source="member.category")
    image_url = serializers.CharField(source="member.image_url")
    distance = serializers.FloatField()
    kept = serializers.CharField(allow_blank=True, help_text="Shop id kept by a reviewer's "
                                 "'duplicate' decision on this pair; empty if undecided.")


class ArticleDuplicatesApi(APIView):
    """The active articles within the duplicate threshold of one article, nearest first.

    Pairs a reviewer marked "not duplicates" are left out (``not_duplicates`` counts them);
    ``kept`` names the article a reviewer kept when the pair was decided "duplicate".
    404 / 409 as for similar searches, 503 without an index. Staff only, as duplicate review
    data is (also with API_AUTH=open).
    """

    permission_classes = [StaffAccess]
    error_statuses = {"get": (400, 404, 409, 503)}

    @extend_schema_serializer(component_name="ArticleDuplicates")
    class OutputSerializer(serializers.Serializer):
        article_id = serializers.CharField()
        model = serializers.CharField()
        index_build = serializers.CharField()
        threshold = serializers.FloatField()
        not_duplicates = serializers.IntegerField()
        deactivated = serializers.ListField(
            child=serializers.CharField(),
            help_text="Articles deactivated when a reviewer kept this one (undo in the admin).",
        )
        results = ArticleDuplicateSerializer(source="duplicates", many=True)

    @extend_schema(parameters=[THRESHOLD_PARAMETER], responses=OutputSerializer)
    def get(self, request: Request, article_id: str) -> Response:
        threshold = request.query_params.get("threshold")
        found = article_duplicates_find(
            article_id=article_id, threshold=None if threshold in (None, "") else threshold
        )
        return Response(self.OutputSerializer(found).data)
