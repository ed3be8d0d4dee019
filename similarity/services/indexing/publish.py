"""Publishing a build: upload it to the "indexes" storage, then record it as current.

The current build is a database fact (the ``CurrentIndex`` row), so every web node agrees on
it whatever disk it runs on. The local ``CURRENT`` pointer of the machine that built it is
kept too: with the default local storage, web processes on that machine serve the build in
place and notice a switch by a stat() of that file.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from similarity.conf import similarity_settings
from similarity.engine.index import current_build, set_current
from similarity.engine.index.storage import BUILDS_DIR
from similarity.models import CurrentIndex, IndexBuild
from similarity.selectors.store import current_index_name
from similarity.storages import (
    build_fetch,
    build_upload,
    index_storage,
    index_storage_is_local,
    stored_builds_prune,
)

logger = logging.getLogger(__name__)


def index_publish(*, name: str, build_id: int | None = None) -> CurrentIndex:
    """Make the local build ``name`` (under the index root) the one every node serves.

    Order: upload to the storage (manifest last), switch the local CURRENT pointer, then
    the database row; a web node that sees the row finds the build complete in storage.
    Publishing the current build again changes nothing (no reload anywhere).
    """
    conf = similarity_settings()
    storage = index_storage()
    shared = not index_storage_is_local(storage)
    if shared:
        build_upload(storage=storage, build_path=conf.index_root / BUILDS_DIR / name)
    local = current_build(conf.index_root)
    if local is None or local.name != name:
        set_current(conf.index_root, name)
    build = IndexBuild.objects.filter(pk=build_id).first() if build_id is not None else None
    with transaction.atomic():
        row = CurrentIndex.objects.select_for_update().filter(pk=CurrentIndex.SINGLETON_PK).first()
        if row is None or row.build_name != name:
            row, _ = CurrentIndex.objects.update_or_create(
                pk=CurrentIndex.SINGLETON_PK,
                defaults={"build_name": name, "published_at": timezone.now(), "build": build},
            )
            logger.info("Published index build %s", name)
    if shared:
        stored_builds_prune(storage=storage, keep=conf.keep_builds, current=name)
    return row


def index_local_sync() -> str | None:
    """Bring the published build into this machine's index root when it is missing there.

    A builder on another machine than the last one (any worker may run a build) then
    updates the published index incrementally and finds unchanged inputs, as the machine
    that built it would. Returns the name made locally current, None when nothing changed.
    """
    conf = similarity_settings()
    storage = index_storage()
    if index_storage_is_local(storage):
        return None
    name = current_index_name()
    local = current_build(conf.index_root)
    if name is None or (local is not None and local.name == name):
        return None
    try:
        build_fetch(storage=storage, name=name, cache_dir=conf.index_root / BUILDS_DIR)
    except FileNotFoundError as error:
        logger.warning("Cannot fetch the published build: %s; building from scratch", error)
        return None
    set_current(conf.index_root, name)
    return name
