"""Acting on duplicates: one article's list (API, admin), reversible keep, split."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Article
from similarity.models import DuplicateDecision
from similarity.selectors.duplicates import article_duplicates_find, duplicate_groups_find
from similarity.services.builds.runs import index_build_run
from similarity.services.duplicates.decisions import (
    duplicate_keep,
    duplicate_keep_undo,
    duplicate_split,
)
from tests.similarity.helpers import make_catalog
from tests.similarity.selectors.test_duplicates import THRESHOLD, copy_of

pytestmark = pytest.mark.django_db
REVIEW = "admin:similarity_duplicategroupreview_changelist"


@pytest.fixture
def catalog() -> list[Article]:
    articles = make_catalog(12)
    copy_of(articles[0], "D0a")
    copy_of(articles[0], "D0b", size=120)
    copy_of(articles[3], "D3a")
    index_build_run(model="classic", progress=False)
    return articles


def active(article_id: str) -> bool:
    return Article.objects.get(article_id=article_id).is_active


def test_article_duplicates_nearest_first_without_itself(catalog):
    found = article_duplicates_find(article_id="S0000", threshold=THRESHOLD)
    assert sorted(d.member.article_id for d in found.duplicates) == ["D0a", "D0b"]
    assert [d.distance for d in found.duplicates] == sorted(d.distance for d in found.duplicates)
    assert all(d.distance < THRESHOLD for d in found.duplicates)
    assert article_duplicates_find(article_id="S0005", threshold=THRESHOLD).duplicates == []


def test_keep_deactivates_the_others_and_undo_reactivates_them(catalog, client):
    outcome = duplicate_keep(kept="S0000", article_ids=["D0a", "D0b"], deactivate=True,
                             decided_by="rev")
    assert outcome.deactivated == ["D0a", "D0b"] and outcome.pairs == 3
    assert not active("D0a") and not active("D0b") and active("S0000")
    pair = DuplicateDecision.objects.get(article_a="D0a", article_b="S0000")
    assert pair.deactivated and pair.kept == "S0000"
    assert not DuplicateDecision.objects.get(article_a="D0a", article_b="D0b").deactivated
    similar = client.get("/api/articles/S0000/similar/?k=5").json()["results"]
    assert {"D0a", "D0b"}.isdisjoint(r["article_id"] for r in similar)  # out of search at once
    found = article_duplicates_find(article_id="S0000", threshold=THRESHOLD)
    assert found.duplicates == [] and found.deactivated == ["D0a", "D0b"]
    undone = duplicate_keep_undo(kept="S0000")
    assert undone.reactivated == ["D0a", "D0b"] and undone.decisions == 3
    assert active("D0a") and active("D0b")
    assert not DuplicateDecision.objects.filter(kept="S0000").exists()
    assert duplicate_groups_find(threshold=THRESHOLD).groups[0].article_ids == [
        "D0a", "D0b", "S0000"]  # the group is back for review


def test_undo_leaves_articles_deactivated_for_other_reasons(catalog):
    Article.objects.filter(article_id="D0b").update(is_active=False)
    outcome = duplicate_keep(kept="S0000", article_ids=["D0a", "D0b"], deactivate=True)
    assert outcome.deactivated == ["D0a"]
    assert duplicate_keep_undo(kept="S0000").reactivated == ["D0a"]
    assert not active("D0b")


def test_split_stays_split_after_a_rebuild(catalog):
    duplicate_split(article_id="D0b", others=["D0a", "S0000", "D0b"])
    index_build_run(model="classic", full=True, progress=False)
    groups = [g.article_ids for g in duplicate_groups_find(threshold=THRESHOLD).groups]
    assert ["D0a", "S0000"] in groups
    assert all("D0b" not in g for g in groups)
    found = article_duplicates_find(article_id="S0000", threshold=THRESHOLD)
    assert [d.member.article_id for d in found.duplicates] == ["D0a"]
    assert found.not_duplicates == 1


def test_article_duplicates_api(catalog, client, admin_client):
    assert client.get("/api/articles/S0000/duplicates/").status_code in (401, 403)  # staff only
    client = admin_client
    response = client.get("/api/articles/S0000/duplicates/", {"threshold": THRESHOLD})
    assert response.status_code == 200
    body = response.json()
    assert sorted(r["article_id"] for r in body["results"]) == ["D0a", "D0b"]
    assert body["threshold"] == THRESHOLD and body["not_duplicates"] == 0
    assert {"distance", "kept", "title", "image_url"} <= set(body["results"][0])
    assert client.get("/api/articles/nope/duplicates/").status_code == 404
    assert client.get("/api/articles/S0000/duplicates/", {"threshold": "9"}).status_code == 400
    group = client.get("/api/duplicates/", {"threshold": THRESHOLD}).json()["results"][0]
    assert group["representative"] in {"D0a", "D0b", "S0000"}


def test_admin_keep_needs_confirmation_says_what_buttons_do_and_undo_works(catalog, admin_client):
    url = reverse(REVIEW)
    page = admin_client.get(url, {"threshold": THRESHOLD}).content.decode()
    assert "Keep this one…" in page and "Remove from group" in page
    assert "asks for confirmation" in page and "stays out of this group after rebuilds" in page
    assert not DuplicateDecision.objects.exists()  # showing the page records nothing
    confirm = admin_client.get(url, {"confirm_keep": "S0000", "article_ids": ["D0a", "D0b"]})
    html = confirm.content.decode()
    assert "Keep S0000 and deactivate the others" in html
    assert "Keep S0000, leave the others active" in html
    assert "reactivates them" in html and "stay active" in html
    assert not DuplicateDecision.objects.exists()
    response = admin_client.post(url, {"article_ids": ["S0000", "D0a", "D0b"],
                                       "decision": "keep:S0000", "deactivate": "1",
                                       "next": url})
    assert response.status_code == 302 and response["Location"] == url
    assert not active("D0a") and not active("D0b")
    article_page = reverse("admin:catalog_article_change", args=[catalog[0].pk])
    html = admin_client.get(article_page).content.decode()
    assert "Duplicates of this article" in html and "Undo: reactivate them" in html
    admin_client.post(url, {"decision": "undo:S0000", "next": article_page})
    assert active("D0a") and active("D0b")
    html = admin_client.get(article_page).content.decode()
    assert "D0a" in html and "Keep this article…" in html and "Not a duplicate" in html


def test_admin_split_from_the_article_page_and_the_group(catalog, admin_client):
    url = reverse(REVIEW)
    admin_client.post(url, {"article_ids": ["S0000"], "decision": "split:D0b"})
    assert DuplicateDecision.objects.get(article_a="D0b", article_b="S0000").verdict == (
        "not_duplicate")
    admin_client.post(url, {"article_ids": ["D3a", "S0003"], "decision": "split:D3a"})
    groups = [g.article_ids for g in duplicate_groups_find(threshold=THRESHOLD).groups]
    assert ["D3a", "S0003"] not in groups
    response = admin_client.post(url, {"article_ids": ["S0001"], "decision": "split:S0001"})
    assert response.status_code == 302  # an error message, not a 500
