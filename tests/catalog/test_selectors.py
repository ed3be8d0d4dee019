"""Catalog reads other apps use: article lookups by primary key, in bounded `IN` queries."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog import selectors
from catalog.models import Article
from catalog.selectors import article_ids_by_pk, existing_article_pks, id_chunks

pytestmark = pytest.mark.django_db


def test_id_chunks():
    assert list(id_chunks(np.arange(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(id_chunks([], 2)) == []
    assert all(type(pk) is int for chunk in id_chunks(np.arange(3)) for pk in chunk)


def test_lookups_by_pk_are_chunked_and_keep_the_two_ids_apart(monkeypatch):
    articles = [
        Article.objects.create(article_id=f"SHOP-{n}", image_url=f"https://x.example/{n}.jpg",
                               is_active=n != 3)
        for n in range(5)
    ]
    pks = [article.pk for article in articles]
    monkeypatch.setattr(selectors, "ID_CHUNK", 2)
    with CaptureQueriesContext(connection) as captured:
        names = article_ids_by_pk(pks=pks)
    assert names == {article.pk: article.article_id for article in articles}
    assert len(captured.captured_queries) == 3  # 2 + 2 + 1 pks
    assert 3 not in [int(name.split("-")[1]) for name in
                     article_ids_by_pk(pks=pks, active_only=True).values()]
    Article.objects.filter(pk=pks[0]).delete()
    assert existing_article_pks(pks=[*pks, 10_000]) == set(pks[1:])
