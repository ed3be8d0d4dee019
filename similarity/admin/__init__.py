"""Similarity admin: the article panel and actions, build history, duplicate review."""

from similarity.admin import articles, builds, current, duplicates  # noqa: F401  (registers the admins)
