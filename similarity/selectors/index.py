"""The index as clients see it: the build being served, its model and preprocessing, and the
latest build record (GET /api/index/)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from similarity.engine.embedders import EmbedderLoadError
from similarity.errors import IndexNotReady
from similarity.models import IndexBuild
from similarity.selectors.search import query_embedder
from similarity.selectors.store import LoadedIndex, get_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexCurrent:
    """The build this process serves, described for clients."""

    name: str
    model: str
    model_identity: str
    preprocessing: dict[str, Any] | None  # None when the model cannot be loaded here
    count: int
    dimension: int
    built_at: datetime | str | None
    index_type: str
    factory: str
    supports_text: bool
    recall_at_10: float | None


@dataclass(frozen=True)
class IndexState:
    current: IndexCurrent | None  # None before the first build
    latest_build: IndexBuild | None


def index_state() -> IndexState:
    """The served build (None when no index is built yet) and the latest build record."""
    try:
        loaded = get_store().get()
    except IndexNotReady:
        current = None
    else:
        current = _described(loaded)
    return IndexState(current=current, latest_build=IndexBuild.objects.first())


def _described(loaded: LoadedIndex) -> IndexCurrent:
    manifest = loaded.manifest
    built_at: datetime | str | None = manifest.created_at
    if not built_at and manifest.build_id is not None:
        build = IndexBuild.objects.filter(pk=manifest.build_id).first()
        built_at = build.finished_at if build else None
    return IndexCurrent(
        name=loaded.name,
        model=manifest.model,
        model_identity=manifest.model_identity or "",
        preprocessing=index_preprocessing(loaded),
        count=int(loaded.index.ntotal),
        dimension=int(loaded.index.d),
        built_at=built_at,
        index_type=manifest.index_type,
        factory=manifest.factory,
        supports_text=bool(manifest.supports_text),
        recall_at_10=manifest.recall_at_10,
    )


def index_preprocessing(loaded: LoadedIndex) -> dict[str, Any] | None:
    """The index model's preprocessing (Embedder.preprocessing), None if it cannot load here."""
    try:
        return query_embedder(loaded, for_text=True).preprocessing()  # runtimes share it
    except (EmbedderLoadError, IndexNotReady) as exc:
        logger.warning("Cannot describe the preprocessing of %s: %s", loaded.manifest.model, exc)
        return None
