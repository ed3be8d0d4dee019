"""API routes (mounted under /api/)."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog.api.urls import article_patterns
from similarity.api.articles import IndexedArticleDetailApi
from similarity.api.batch import SimilarBatchApi
from similarity.api.client import IndexClientApi, IndexClientModelApi
from similarity.api.duplicates import ArticleDuplicatesApi, DuplicatesApi
from similarity.api.fallback import NOT_FOUND_NAME, api_not_found
from similarity.api.index import IndexApi, IndexBuildDetailApi, IndexRebuildApi
from similarity.api.search import ArticleSimilarApi, SimilarSearchApi

app_name = "api"

# Article ids may hold any character, "/" included (<path:>); the similar and duplicates
# routes come before the catalog's article routes so ".../similar/" is never read as part
# of an id.
urlpatterns = [
    path(
        "articles/<path:article_id>/similar/",
        ArticleSimilarApi.as_view(),
        name="article-similar",
    ),
    path(
        "articles/<path:article_id>/duplicates/",
        ArticleDuplicatesApi.as_view(),
        name="article-duplicates",
    ),
    *article_patterns(detail_view=IndexedArticleDetailApi),
    path("similar/", SimilarSearchApi.as_view(), name="similar"),
    path("similar/batch/", SimilarBatchApi.as_view(), name="similar-batch"),
    path("index/", IndexApi.as_view(), name="index"),
    path("index/rebuild/", IndexRebuildApi.as_view(), name="index-rebuild"),
    path("index/client/", IndexClientApi.as_view(), name="index-client"),
    path("index/client/model.onnx", IndexClientModelApi.as_view(), name="index-client-model"),
    path("index/builds/<int:build_id>/", IndexBuildDetailApi.as_view(), name="index-build-detail"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("duplicates/", DuplicatesApi.as_view(), name="duplicates"),
    # Last: any other /api/ path answers a JSON 404 in the API's error shape.
    re_path(r"^(?P<rest>.*)$", api_not_found, name=NOT_FOUND_NAME),
]
