"""Similarity admin: article panel and actions, build history, duplicate review, match runs,
search by photo."""

from similarity.admin import (  # noqa: F401  (registers the admins)
    articles,
    builds,
    current,
    duplicates,
    match_runs,
    photo_search,
)
