"""An image server that goes away during a forced refresh takes nothing out of search."""

from __future__ import annotations

import pytest
from PIL import Image

from catalog.models import Article
from catalog.services.downloads import images_download
from demo.loopback import LoopbackServer
from demo.sample_images import product_jpeg
from similarity.conf import similarity_settings
from similarity.engine.index import current_build
from similarity.selectors.search import similar_to_article
from similarity.selectors.store import get_store, read_members
from similarity.services.builds.runs import index_build_run
from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _restore_pillow_limit():
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


def indexed_pks() -> set[int]:
    info = current_build(similarity_settings().index_root)
    return set(read_members(info.path)[:, 0].tolist())


def test_server_gone_during_force_keeps_articles_downloaded_and_indexed() -> None:
    with LoopbackServer() as server:
        articles = [
            ArticleFactory(image_url=server.add(f"/{n}.jpg", product_jpeg(n, size=64)))
            for n in range(6)
        ]
        assert images_download(progress=False, backoff_factor=0).downloaded == 6
        index_build_run(model="classic", progress=False)
        assert indexed_pks() == {a.pk for a in articles}
        gone = server.url("/0.jpg")
    # The server is stopped: every refresh now fails to connect.

    summary = images_download(force=True, progress=False, backoff_factor=0, retries=0)

    assert (summary.downloaded, summary.failed, summary.kept) == (0, 6, 6)
    rows = Article.objects.filter(pk__in=[a.pk for a in articles])
    assert set(rows.values_list("download_status", flat=True)) == {"downloaded"}
    assert all(row.refresh_error.startswith("connection failed") for row in rows)
    assert all(row.has_image for row in rows)

    index_build_run(model="classic", progress=False)
    get_store().clear()
    assert indexed_pks() == {a.pk for a in articles}
    result = similar_to_article(article_id=articles[0].article_id, k=3)
    assert result.results[0].article_id == articles[0].article_id
    assert Article.objects.get(pk=articles[0].pk).image_url == gone
