"""factory_boy factories for the catalog."""

from __future__ import annotations

import factory

from catalog.models import Article


class ArticleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Article

    article_id = factory.Sequence(lambda n: f"A{n:05d}")
    title = factory.Sequence(lambda n: f"Article {n}")
    category = "bags"
    image_url = factory.Sequence(lambda n: f"http://127.0.0.1:9/images/{n}.jpg")
