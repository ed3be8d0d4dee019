"""The demo runs through the real pipeline, re-runs, and never touches a real catalog."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Article
from demo.services import demo_run
from similarity.selectors.search import similar_to_article

pytestmark = pytest.mark.django_db


def test_demo_runs_twice_and_answers_a_query():
    lines: list[str] = []
    assert demo_run(out=lines.append, products=6, model="classic", port=0) == "classic"
    assert demo_run(out=lines.append, products=6, model="classic", port=0) == "classic"
    assert Article.objects.filter(is_active=True).count() == 12  # 6 products + 6 copies
    # The demo runs the default runtime (auto) and says which ran and why.
    assert "Embedding runtime torch: auto: only the torch reference can run this model" in lines
    result = similar_to_article(article_id="P0000", k=3)
    assert result.results[0].article_id == "P0000"
    assert result.results[1].article_id == "P0000-B"  # its re-listed copy comes next


def test_demo_refuses_a_database_with_a_real_catalog():
    Article.objects.create(article_id="SHOP-1", image_url="https://shop.example/1.jpg")
    with pytest.raises(CommandError, match=r"1 articles that are not the demo's.*SHOP-1"):
        call_command("demo", "--products", "3", "--model", "classic")
    shop = Article.objects.get()
    assert shop.article_id == "SHOP-1" and shop.is_active  # untouched, nothing imported
