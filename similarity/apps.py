"""Similarity app: embeddings, the Faiss index, search, background builds."""

from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"
