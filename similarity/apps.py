"""Similarity app: embeddings, the Faiss index, search, background builds."""

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity"

    def ready(self) -> None:
        from similarity import checks  # noqa: F401  (registers the settings checks)

        post_migrate.connect(schedule_build_reaper, sender=self)


def schedule_build_reaper(using: str = "default", **kwargs: Any) -> None:
    """After every migrate (and test flush): the django-q2 schedule that reaps dead builds.

    ``update_or_create`` keeps one row per database; a qcluster runs it every minute.
    """
    from django.db import connections
    from django_q.models import Schedule

    from similarity.tasks import REAP_SCHEDULE_NAME

    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return  # django_q not migrated yet (e.g. "migrate similarity"): its migrate adds it
    Schedule.objects.using(using).update_or_create(
        name=REAP_SCHEDULE_NAME,
        defaults={
            "func": "similarity.tasks.builds_reap",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )
