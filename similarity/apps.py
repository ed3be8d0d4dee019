"""Similarity app: embeddings, the Faiss index, search, background builds."""

from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"

    def ready(self) -> None:
        from similarity import checks  # noqa: F401  (registers the settings checks)
