"""Admin: every page renders, the "Similar items" panel, the article actions, build history."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_q.models import Success

from catalog.models import Article
from catalog.services.download_queue import DOWNLOAD_TASK
from demo.loopback import LoopbackServer
from demo.sample_images import product_jpeg
from similarity.admin.articles import (
    SIMILAR_K,
    ArticleSimilarityAdmin,
    similar_panel,
)
from similarity.models import IndexBuild
from similarity.services.builds.queue import index_build_enqueue
from similarity.services.builds.runs import index_build_run
from tests.factories import ArticleFactory
from tests.similarity.helpers import make_catalog

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:catalog_article_changelist"


def change_url(article: Article) -> str:
    return reverse("admin:catalog_article_change", args=[article.pk])


@pytest.fixture
def indexed() -> list[Article]:
    articles = make_catalog(15)
    index_build_run(model="classic", progress=False)
    return articles


def test_every_admin_page_renders(admin_client, indexed, django_capture_on_commit_callbacks):
    """Changelist, add and change page of every registered model (cookiecutter-django style)."""
    with django_capture_on_commit_callbacks(execute=True):  # a django-q2 task row too
        index_build_enqueue(model="classic", trigger="admin")
    assert Success.objects.exists()
    checked = 0
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        prefix = f"admin:{meta.app_label}_{meta.model_name}"
        response = admin_client.get(reverse(f"{prefix}_changelist"))
        assert response.status_code == 200, f"{prefix}_changelist"
        if model_admin.has_add_permission(response.wsgi_request):
            response = admin_client.get(reverse(f"{prefix}_add"))
            assert response.status_code == 200, f"{prefix}_add"
        obj = model_admin.get_queryset(response.wsgi_request).first()
        if obj is not None:
            response = admin_client.get(reverse(f"{prefix}_change", args=[obj.pk]))
            assert response.status_code == 200, f"{prefix}_change"
        checked += 1
    assert checked >= 4  # articles, builds, django-q2 tasks and schedules at least


def test_article_admin_is_the_similarity_subclass():
    assert isinstance(admin.site._registry[Article], ArticleSimilarityAdmin)


def test_panel_shows_similar_items_with_links_and_distances(admin_client, indexed):
    article = indexed[0]
    response = admin_client.get(change_url(article))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Similar items" in html
    panel = html[html.index('id="similar-items"') :]
    cards = re.findall(r'<a class="similar-card" href="([^"]+)"', panel)
    assert len(cards) == SIMILAR_K
    assert change_url(article) not in cards  # the article itself is left out
    others = {change_url(a) for a in indexed[1:]}
    assert set(cards) <= others
    images = re.findall(r'<img src="(/media/images/[^"]+\.jpg)"', panel)
    assert len(images) == SIMILAR_K
    distances = [float(d) for d in re.findall(r"distance (\d+\.\d+)", panel)]
    assert len(distances) == SIMILAR_K
    assert distances == sorted(distances) and all(0.0 <= d <= 2.0 for d in distances)
    assert "model classic" in panel


def test_panel_costs_the_same_queries_whatever_k(indexed):
    """The selector hydrates results in one query: no N+1 over the shown items."""
    article = indexed[0]
    with CaptureQueriesContext(connection) as few:
        assert len(similar_panel(article, k=2).items) == 2
    with CaptureQueriesContext(connection) as many:
        assert len(similar_panel(article, k=12).items) == 12
    assert len(many) == len(few) <= 4


def test_panel_explains_a_failed_download(admin_client, indexed):
    failed = ArticleFactory(
        download_status=Article.DownloadStatus.FAILED, download_error="HTTP 404 Not Found"
    )
    response = admin_client.get(change_url(failed))
    html = response.content.decode()
    panel = html[html.index('id="similar-items"') :]
    assert "not in the similarity index yet" in panel
    assert "failed to download (HTTP 404 Not Found)" in panel
    assert "similar-card" not in panel


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, "has not been downloaded yet"),
        ({"is_active": False}, "the article is inactive"),
    ],
)
def test_panel_explains_other_unindexed_articles(admin_client, indexed, fields, reason):
    article = ArticleFactory(**fields)
    response = admin_client.get(change_url(article))
    assert reason in response.content.decode()


def test_panel_explains_an_article_added_after_the_build(admin_client, indexed):
    late = make_catalog(1, start=100)[0]
    response = admin_client.get(change_url(late))
    assert "added or changed after the last index build" in response.content.decode()


def test_panel_says_when_no_index_exists(admin_client):
    article = make_catalog(1)[0]
    response = admin_client.get(change_url(article))
    assert response.status_code == 200
    assert "No similarity index has been built yet" in response.content.decode()


def test_add_page_has_no_panel(admin_client):
    response = admin_client.get(reverse("admin:catalog_article_add"))
    assert response.status_code == 200
    assert b'id="similar-items"' not in response.content


def post_action(admin_client, action: str, articles: list[Article]):
    return admin_client.post(
        reverse(CHANGELIST),
        {"action": action, ACTION_CHECKBOX_NAME: [a.pk for a in articles]},
        follow=True,
    )


def test_download_action_queues_a_task_and_returns_at_once(
    admin_client, loopback: LoopbackServer, django_capture_on_commit_callbacks
):
    good = ArticleFactory(image_url=loopback.add("/good.jpg", product_jpeg(1, size=64)))
    missing = ArticleFactory(image_url=loopback.url("/missing.jpg"))
    untouched = ArticleFactory(image_url=loopback.add("/other.jpg", product_jpeg(2, size=64)))
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_action(admin_client, "download_images", [good, missing])
    assert response.status_code == 200
    text = [str(m) for m in response.context["messages"]]
    assert any("images of 2 selected article(s) in the background" in m for m in text), text
    # Nothing was fetched inside the request: the task is sent when the request commits.
    assert loopback.hits == {} and len(callbacks) == 1
    callbacks[0]()  # django-q2 runs it inline in tests (Q_CLUSTER sync)

    result = Success.objects.get(func=DOWNLOAD_TASK).result
    assert "2 article(s): 1 downloaded, 0 skipped (unchanged), 1 failed" in result
    assert f"{missing.article_id}: HTTP 404" in result
    good.refresh_from_db()
    missing.refresh_from_db()
    untouched.refresh_from_db()
    assert good.has_image and good.image_width == 64
    assert missing.download_status == Article.DownloadStatus.FAILED
    assert untouched.download_status == Article.DownloadStatus.PENDING
    assert "/other.jpg" not in loopback.hits

    # A plain download leaves the failed one alone; the retry action fetches it.
    loopback.add("/missing.jpg", product_jpeg(3, size=64))
    with django_capture_on_commit_callbacks(execute=True):
        post_action(admin_client, "download_images", [missing])
    missing.refresh_from_db()
    assert missing.download_status == Article.DownloadStatus.FAILED
    assert "1 previously failed article(s) not retried" in Success.objects.latest("stopped").result
    with django_capture_on_commit_callbacks(execute=True):
        response = post_action(admin_client, "retry_failed_downloads", [missing])
    assert "previously failed ones included" in str(next(iter(response.context["messages"])))
    missing.refresh_from_db()
    assert missing.has_image


def test_download_action_refuses_more_than_it_can_queue(admin_client, monkeypatch):
    from similarity.admin import articles

    monkeypatch.setattr(articles, "MAX_ACTION_DOWNLOADS", 2)
    chosen = [ArticleFactory() for _ in range(3)]
    response = post_action(admin_client, "download_images", chosen)
    assert any("3 articles selected; at most 2" in str(m) for m in response.context["messages"])
    assert not Success.objects.exists()


def test_rebuild_action_queues_a_build_that_runs(
    admin_client, settings, django_capture_on_commit_callbacks
):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MODEL": "classic"}
    articles = make_catalog(6)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post_action(admin_client, "rebuild_index", articles[:1])
    assert len(callbacks) == 1
    build = IndexBuild.objects.get()
    assert build.trigger == "admin" and build.model == "classic"
    message = next(str(m) for m in response.context["messages"])
    assert f"#{build.pk}</a> queued" in message
    assert reverse("admin:similarity_indexbuild_change", args=[build.pk]) in message
    build.refresh_from_db()
    assert build.status == IndexBuild.Status.SUCCEEDED, build.error
    assert build.article_count == 6 and build.task_id

    response = admin_client.get(change_url(articles[0]))
    assert response.content.decode().count('class="similar-card"') == 5


def test_build_page_shows_timings_failures_and_task(
    admin_client, settings, django_capture_on_commit_callbacks
):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MODEL": "classic"}
    articles = make_catalog(3)
    broken = articles[2]
    # A file that matches its recorded hash (so the download step keeps it) but won't decode.
    garbage = b"not a jpeg"
    (settings.MEDIA_ROOT / broken.image.name).write_bytes(garbage)
    Article.objects.filter(pk=broken.pk).update(image_sha256=hashlib.sha256(garbage).hexdigest())
    with django_capture_on_commit_callbacks(execute=True):
        post_action(admin_client, "rebuild_index", articles[:1])
    build = IndexBuild.objects.get()
    assert build.failed_count == 1, build.failures
    response = admin_client.get(reverse("admin:similarity_indexbuild_change", args=[build.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r"<th scope=\"row\">total_seconds</th><td[^>]*>\d+\.\d{3} s</td>", html)
    assert re.search(r"<th scope=\"row\">embed\.\w+", html)  # nested timings flattened
    assert f'<a href="{change_url(broken)}">{broken.article_id}</a>' in html
    assert re.search(r'href="/admin/django_q/success/[^"]+/change/"', html)
    assert "&quot;model&quot;: &quot;classic&quot;" in html  # pretty manifest JSON
    assert 'name="_save"' not in html  # read-only

    response = admin_client.get(reverse("admin:similarity_indexbuild_changelist"))
    assert "Succeeded" in response.content.decode()
    assert admin_client.get(reverse("admin:similarity_indexbuild_add")).status_code == 403
