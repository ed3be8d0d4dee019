"""Duplicates: groups equal brute-force components; decisions survive rebuilds and re-imports."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog import selectors as catalog_selectors
from catalog.models import Article
from demo.sample_images import product_image
from similarity.engine.index import star_groups
from similarity.models import DuplicateDecision
from similarity.selectors import duplicates
from similarity.selectors.duplicates import (
    TooManyPairs,
    duplicate_groups_find,
    pair_cap,
)
from similarity.services.builds.runs import index_build_run
from similarity.services.indexing.update import collect_inputs
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
    inputs = collect_inputs("classic@v2")
    distances = 1 - inputs.vectors @ inputs.vectors.T
    rows, cols = np.nonzero(np.triu(distances < threshold, k=1))
    stars = star_groups(inputs.ids[rows], inputs.ids[cols], distances[rows, cols])
    return [sorted(star.members) for star in stars]


@pytest.mark.parametrize("threshold", [0.02, THRESHOLD, 0.15])
def test_groups_are_stars_of_brute_force_pairs_with_no_pair_over_the_threshold(
    catalog, threshold
):
    report = duplicate_groups_find(threshold=threshold)
    found = [sorted(m.pk for m in g.members) for g in report.groups]
    assert found == brute_force_groups(threshold)
    inputs = collect_inputs("classic@v2")
    row = {int(pk): n for n, pk in enumerate(inputs.ids)}
    for group in report.groups:
        vectors = inputs.vectors[[row[m.pk] for m in group.members]]
        assert (1 - vectors @ vectors.T).max() < threshold
        size = len(group.members)
        assert group.pair_count == size * (size - 1) // 2  # every pair of members is close
        assert group.representative in group.article_ids


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
    for bad in ("0", "-1", "abc", "0.3", "0.5", "nan"):
        with pytest.raises(CommandError, match=r"threshold must be a number in \(0, 0.25\]"):
            call_command("find_duplicates", "--threshold", bad)


def test_no_index_is_a_clear_error():
    with pytest.raises(CommandError, match="no index has been built"):
        call_command("find_duplicates")


def test_not_duplicate_decision_survives_rebuild_and_reimport(catalog, tmp_path):
    from similarity.services.duplicates.decisions import duplicate_decision_record

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


def test_api_duplicates(catalog, admin_client):
    client = admin_client  # review data: staff only (test_observability covers anonymous)
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


def test_api_duplicates_without_index(admin_client):
    response = admin_client.get("/api/duplicates/")
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


def test_pair_cap_scales_with_the_index():
    assert pair_cap(10) == 100_000
    assert pair_cap(10_000) == 500_000


@pytest.fixture
def cap_of_two(monkeypatch):
    """At most two pairs may be collected; the catalog has four below THRESHOLD."""
    monkeypatch.setattr(duplicates, "PAIRS_PER_VECTOR", 0)
    monkeypatch.setattr(duplicates, "MIN_PAIR_CAP", 2)


def test_too_many_pairs_is_a_clear_error_everywhere(catalog, cap_of_two, admin_client):
    assert len(duplicate_groups_find(threshold=0.01).groups) <= 2  # few pairs: fine
    with pytest.raises(TooManyPairs, match=r"more than 2 pairs .* lower the threshold"):
        duplicate_groups_find(threshold=THRESHOLD)
    response = admin_client.get("/api/duplicates/", {"threshold": THRESHOLD})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_many_pairs" and "lower the threshold" in error["message"]
    with pytest.raises(CommandError, match="lower the threshold"):
        call_command("find_duplicates", "--threshold", str(THRESHOLD), stderr=StringIO())
    url = reverse("admin:similarity_duplicategroupreview_changelist")
    page = admin_client.get(url, {"threshold": THRESHOLD})
    assert page.status_code == 200 and "lower the threshold" in page.content.decode()


def test_groups_list_only_the_closest_pairs_with_the_real_count(
    catalog, monkeypatch, admin_client
):
    full = duplicate_groups_find(threshold=THRESHOLD).groups[0]
    assert full.pair_count == len(full.pairs) == 3
    monkeypatch.setattr(duplicates, "PAIRS_LISTED", 1)
    capped = duplicate_groups_find(threshold=THRESHOLD).groups[0]
    assert capped.pairs == full.pairs[:1]
    assert capped.pair_count == 3 and capped.max_distance == full.max_distance
    assert full.max_distance == max(pair.distance for pair in full.pairs)
    group = admin_client.get("/api/duplicates/", {"threshold": THRESHOLD}).json()["results"][0]
    assert group["pair_count"] == 3 and len(group["pairs"]) == 1
    assert group["max_distance"] == full.max_distance


def test_pairs_cached_per_threshold_for_a_few_recent_thresholds(catalog, monkeypatch):
    computed: list[float] = []
    collect = duplicates.collect_pairs

    def counting(loaded, threshold):
        computed.append(threshold)
        return collect(loaded, threshold)

    monkeypatch.setattr(duplicates, "collect_pairs", counting)
    monkeypatch.setattr(duplicates, "_pairs_cache", {})
    recent = [0.02, 0.03, THRESHOLD, 0.1]  # CACHED_THRESHOLDS = 4
    for threshold in recent + recent[::-1]:
        duplicate_groups_find(threshold=threshold)
    assert computed == recent  # switching back and forth: computed once each
    duplicate_groups_find(threshold=0.15)  # evicts the least recently used: 0.1
    duplicate_groups_find(threshold=0.02)  # still cached
    duplicate_groups_find(threshold=0.1)
    assert computed == [*recent, 0.15, 0.1]


def test_too_many_pairs_is_cached_as_well(catalog, cap_of_two, monkeypatch):
    computed: list[float] = []
    collect = duplicates.collect_pairs
    monkeypatch.setattr(duplicates, "collect_pairs",
                        lambda loaded, t: computed.append(t) or collect(loaded, t))
    monkeypatch.setattr(duplicates, "_pairs_cache", {})
    for _ in range(2):
        with pytest.raises(TooManyPairs):
            duplicate_groups_find(threshold=THRESHOLD)
    assert computed == [THRESHOLD]


def largest_in_list(queries: list[dict], table: str) -> int:
    """The most values any `IN (...)` of a query on ``table`` carried."""
    sizes = [0]
    for query in queries:
        sql = query["sql"]
        if f'FROM "{table}"' in sql and " IN (" in sql:
            in_list = sql.split(" IN (", 1)[1].split(")", 1)[0]
            sizes.append(in_list.count(",") + 1)
    return max(sizes)


def test_lookups_are_chunked(catalog, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from similarity.services.duplicates.decisions import duplicate_decision_record

    duplicate_decision_record(article_ids=["D3a", "S0003"], verdict="not_duplicate")
    expected = duplicate_groups_find(threshold=0.15)
    monkeypatch.setattr(catalog_selectors, "ID_CHUNK", 2)
    monkeypatch.setattr(duplicates, "ID_CHUNK", 2)
    with CaptureQueriesContext(connection) as captured:
        chunked = duplicate_groups_find(threshold=0.15)
    assert chunked == expected
    assert largest_in_list(captured.captured_queries, "catalog_article") == 2
    assert largest_in_list(captured.captured_queries, "similarity_duplicatedecision") == 2
