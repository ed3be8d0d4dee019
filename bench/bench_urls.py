"""Benchmark-only URLconf: the product URLs plus a bare DRF view with a hard-coded answer."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

BARE_ANSWER = {
    "article_id": "B0000000",
    "model": "bench-random",
    "index_build": "20260101T000000000000Z-00000000",
    "results": [
        {
            "article_id": f"B{n:07d}",
            "title": f"Bench article {n}",
            "category": f"category-{n % 20}",
            "image_url": f"https://shop.example/images/B{n:07d}.jpg",
            "distance": 0.01 * n,
            "score": 1 - 0.01 * n,
        }
        for n in range(10)
    ],
}


class BareSimilarApi(APIView):
    """Same DRF stack (auth, permissions, renderers) and answer shape; no database, no index."""

    def get(self, request: Request, article_id: str) -> Response:
        return Response({**BARE_ANSWER, "article_id": article_id})


urlpatterns = [
    path("bench/bare/<path:article_id>/similar/", BareSimilarApi.as_view()),
    path("", include("config.urls")),
]
