"""The article endpoints are served with the similarity index state: same fixtures."""

from tests.similarity.api.conftest import _fresh_cache, catalog, client  # noqa: F401
