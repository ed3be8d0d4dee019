"""Duplicates: groups equal brute-force components; decisions survive rebuilds and re-imports."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Article
from catalog.sample_images import product_image
from similarity.models import DuplicateDecision
from similarity.services.builds import index_build_run
from similarity.services.duplicates import connected_components, duplicate_groups_find
from similarity.services.indexing import collect_inputs
from tests.similarity.helpers import make_catalog, store_image

pytestmark = pytest.mark.django_db
THRESHOLD = 0.05


def copy_of(article: Article, article_id: str, size: int = 80) -> Article:
    """A second article with the same product photo at another size (a near-duplicate)."""
    seed = int(article.article_id[1:])
    twin = Article.objects.create(article_id=article_id, title=f"copy of {seed}",
                                  category=article.category, image_url=f"http://127.0.0.1:9/{article_id}.jpg")
    return store_image(twin, product_image(seed, size=size), quality=70)


@pytest.fixture
def catalog() -> list[Article]:
    articles = make_catalog(20)
    copy_of(articles[0], "D0a")
    copy_of(articles[0], "D0b", size=120)
    copy_of(articles[3], "D3a")
    index_build_run(model="classic", progress=False)
    return articles


def brute_force_groups(threshold: float) -> list[list[int]]:
    inputs = collect_inputs("classic@v1")
    distances = 1 - inputs.vectors @ inputs.vectors.T
    rows, cols = np.nonzero(np.triu(distances < threshold, k=1))
    return connected_components(
        (int(inputs.ids[r]), int(inputs.ids[c])) for r, c in zip(rows, cols, strict=True)
    )


@pytest.mark.parametrize("threshold", [0.02, THRESHOLD, 0.15])
def test_groups_equal_brute_force_connected_components(catalog, threshold):
    report = duplicate_groups_find(threshold=threshold)
    found = [sorted(m.pk for m in g.members) for g in report.groups]
    assert found == brute_force_groups(threshold)


def test_planted_copies_are_grouped_largest_first(catalog):
    report = duplicate_groups_find(threshold=THRESHOLD)
    ids = [g.article_ids for g in report.groups]
    assert ids[0] == ["D0a", "D0b", "S0000"]
    assert ["D3a", "S0003"] in ids
    assert all(p.distance < THRESHOLD for g in report.groups for p in g.pairs)


def test_command_output_and_threshold_validation(catalog, tmp_path):
    out, err = StringIO(), StringIO()
    call_command("find_duplicates", "--threshold", "0.05", stdout=out, stderr=err)
    assert out.getvalue().startswith("Group 1 (3 articles")
    assert "pairs below 0.05" in err.getvalue()
    target = tmp_path / "groups.jsonl"
    call_command("find_duplicates", "--output", str(target), stderr=StringIO())
    assert '"articles": ["D0a", "D0b", "S0000"]' in target.read_text().splitlines()[0]
    for bad in ("0", "-1", "abc", "0.9", "nan"):
        with pytest.raises(CommandError, match=r"threshold must be a number in \(0, 0.5\]"):
            call_command("find_duplicates", "--threshold", bad)


def test_no_index_is_a_clear_error():
    with pytest.raises(CommandError, match="no index has been built"):
        call_command("find_duplicates")


def test_not_duplicate_decision_survives_rebuild_and_reimport(catalog, tmp_path):
    from similarity.services.duplicates import duplicate_decision_record

    duplicate_decision_record(article_ids=["D3a", "S0003"], verdict="not_duplicate")
    duplicate_decision_record(article_ids=["D0a", "D0b", "S0000"], verdict="duplicate",
                              kept="S0000")
    assert duplicate_groups_find(threshold=THRESHOLD).groups == []
    assert len(duplicate_groups_find(threshold=THRESHOLD, include_reviewed=True).groups) == 1

    index_build_run(model="classic", progress=False, full=True)  # rebuild
    assert duplicate_groups_find(threshold=THRESHOLD).groups == []

    # Re-import: articles deleted and created again get new pks; decisions use shop ids.
    twin = Article.objects.get(article_id="D3a")
    twin.delete()
    copy_of(Article.objects.get(article_id="S0003"), "D3a")
    index_build_run(model="classic", progress=False)
    assert duplicate_groups_find(threshold=THRESHOLD).groups == []
    assert DuplicateDecision.objects.count() == 4

    # A new copy is new information: its group comes back with only its undecided pairs.
    copy_of(catalog[3], "D3b", size=110)
    index_build_run(model="classic", progress=False)
    groups = duplicate_groups_find(threshold=THRESHOLD).groups
    assert len(groups) == 1 and "D3b" in groups[0].article_ids


def test_api_duplicates(catalog, client):
    response = client.get("/api/duplicates/", {"threshold": "0.05", "limit": 1})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2 and body["threshold"] == 0.05 and body["next"]
    group = body["results"][0]
    assert group["size"] == 3 and [a["article_id"] for a in group["articles"]] == [
        "D0a", "D0b", "S0000"]
    assert group["articles"][0]["image"].startswith("http://testserver/")
    bad = client.get("/api/duplicates/", {"threshold": "2"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_query"
    assert "got '2'" in bad.json()["error"]["message"]


def test_api_duplicates_without_index(client):
    response = client.get("/api/duplicates/")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "index_not_ready"


def test_admin_review_page_and_decision(catalog, admin_client):
    url = reverse("admin:similarity_duplicategroupreview_changelist")
    page = admin_client.get(url, {"threshold": "0.05"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "2 groups below distance 0.05" in html
    assert reverse("admin:catalog_article_change", args=[catalog[0].pk]) in html
    assert html.count("<img") >= 5
    response = admin_client.post(
        url + "?threshold=0.05",
        {"article_ids": ["D3a", "S0003"], "decision": "not_duplicate"},
    )
    assert response.status_code == 302
    assert DuplicateDecision.objects.filter(article_a="D3a", article_b="S0003").exists()
    html = admin_client.get(url, {"threshold": "0.05"}).content.decode()
    assert "1 group below" in html and "D3a" not in html
    admin_client.post(url, {"article_ids": ["D0a", "D0b", "S0000"], "decision": "keep:S0000"})
    assert DuplicateDecision.objects.get(article_a="D0a", article_b="D0b").kept == "S0000"
    assert "No duplicate groups" in admin_client.get(url).content.decode()
    assert admin_client.get(url, {"threshold": "x"}).status_code == 200  # error shown on page
    decisions = reverse("admin:similarity_duplicatedecision_changelist")
    assert admin_client.get(decisions).status_code == 200
