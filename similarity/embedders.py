"""The one provider of loaded embedders: a model on a runtime and a device, once per process.

Builds, shard workers, supplier matching and API queries all ask ``embedder_for``. The
engine loads the model (``engine.embedders.load_embedder``); here it is put on the runtime
the caller names once it passes the accuracy gate (``engine.embedders.runtimes``), checked
against the identity a build recorded, and kept for the process. Queries and matching use
the runtime their index was built on (its manifest says which); a runtime that cannot run
here falls back to the torch fp32 reference for them, whose vectors the gate proved equal.

The cache is invalidated explicitly: ``embedders_clear`` (also the engine's caches), and a
changed LOOKALIKE, DATA_DIR or MODEL_CACHE_DIR setting (the gate's thresholds, the ONNX
cache directory).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from django.core.signals import setting_changed
from django.dispatch import receiver

from similarity.conf import similarity_settings
from similarity.engine.embedders import (
    Embedder,
    EmbedderLoadError,
    clear_embedder_cache,
    device_check,
    load_embedder,
    parse_model_spec,
)
from similarity.engine.embedders.calibration import calibration_images
from similarity.engine.embedders.runtimes import (
    AUTO,
    RuntimeChoice,
    clear_runtime_cache,
    select_runtime,
    validate_runtime,
)
from similarity.engine.embedders.wrapped import REFERENCE
from similarity.engine.threads import fork_safe_threads, mark_openmp_used

logger = logging.getLogger(__name__)

MSG_OTHER_WEIGHTS = "{model!r} loads here as {found!r}, not {expected!r}"
MSG_RUNTIME_FALLBACK = (
    "runtime %r cannot run %s here (%s); using the torch fp32 reference, whose vectors "
    "passed the same accuracy gate"
)


class OtherWeights(EmbedderLoadError):
    """The model loads here with other weights than the identity a build recorded."""

    def __init__(self, *, model: str, expected: str, found: str) -> None:
        super().__init__(MSG_OTHER_WEIGHTS.format(model=model, expected=expected, found=found))
        self.model = model
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class ProvidedEmbedder:
    """A loaded embedder on its runtime, with what the gate measured, and its device."""

    embedder: Embedder
    runtime: RuntimeChoice
    device: str


_Key = tuple[str, str, str, int]  # canonical spec, runtime asked for, device, threads
_cache: dict[_Key, ProvidedEmbedder] = {}
_lock = threading.Lock()


def embedder_for(
    model: str,
    *,
    runtime: str | None = None,
    device: str | None = None,
    identity: str | None = None,
    strict: bool = True,
) -> ProvidedEmbedder:
    """``model`` on ``runtime`` (default: the RUNTIME setting) and ``device`` (default: the
    DEVICE setting), loaded and gated once per process.

    ``identity`` (a build's ``model_identity``): the embedder must have it; a cached one
    that does not is reloaded once (the weights changed on disk), then OtherWeights.
    ``strict=False`` (queries, matching): a runtime that is unavailable or refused here
    gives the reference instead, with a warning. EmbedderLoadError when the model or the
    device cannot be used (its message says why); ValueError for an unknown runtime.
    """
    conf = similarity_settings()
    spec = parse_model_spec(model).canonical
    wanted = validate_runtime(runtime or conf.runtime)
    key = (spec, wanted, device_check(device or conf.device), fork_safe_threads(conf.threads))
    provided = _cache.get(key)  # the hot path (every image query): no lock
    if provided is not None and (not identity or provided.embedder.identity() == identity):
        return provided
    with _lock:
        provided = _cache.get(key) or _provide(key, strict=strict)
        if identity and provided.embedder.identity() != identity:
            _forget(spec)  # the weights behind the spec changed since it was loaded
            provided = _provide(key, strict=strict)
            found = provided.embedder.identity()
            if found != identity:
                raise OtherWeights(model=spec, expected=identity, found=found)
        return provided


def _provide(key: _Key, *, strict: bool) -> ProvidedEmbedder:
    spec, wanted, device, threads = key
    base = load_embedder(spec, device=device, threads=threads)
    mark_openmp_used()
    try:
        embedder, choice = _on_runtime(base, wanted, threads=threads)
    except EmbedderLoadError as exc:
        if strict:
            raise
        logger.warning(MSG_RUNTIME_FALLBACK, wanted, spec, exc)
        embedder, choice = base, RuntimeChoice(
            requested=wanted, runtime=REFERENCE,
            reason=f"{wanted} cannot run here ({exc}); the torch reference runs instead",
        )
    provided = ProvidedEmbedder(embedder=embedder, runtime=choice, device=device)
    _cache[key] = provided
    if wanted == AUTO:  # the runtime auto chose serves those who ask for it by name
        _cache.setdefault((spec, choice.runtime, device, threads), provided)
    return provided


def _on_runtime(
    embedder: Embedder, runtime: str, *, threads: int
) -> tuple[Embedder, RuntimeChoice]:
    """``embedder`` on ``runtime`` once it passes the gate; the reference as it is.

    Calibration images are generated (``engine.embedders.calibration``), so the gate is
    deterministic for a model. RuntimeRefused / RuntimeUnavailable (EmbedderLoadError)
    when an explicit runtime cannot be used; ``auto`` falls back instead.
    """
    if runtime == REFERENCE:
        return embedder, RuntimeChoice(requested=runtime, runtime=REFERENCE)
    conf = similarity_settings()
    chosen, choice = select_runtime(
        embedder,
        runtime,
        calibration=calibration_images(conf.runtime_calibration_images),
        cache_dir=conf.onnx_cache_dir,
        threads=threads,
        min_cosine=conf.runtime_min_cosine,
        min_overlap=conf.runtime_min_overlap,
        choice_dir=conf.runtime_choice_dir,
    )
    logger.info("Embedding runtime %s: %s", choice.runtime, choice.reason)
    return chosen, choice


def _forget(spec: str) -> None:
    for key in [key for key in _cache if key[0] == spec]:
        del _cache[key]
    clear_embedder_cache()
    clear_runtime_cache()


def embedders_clear() -> None:
    """Forget every loaded embedder of this process (the next ask loads and gates again)."""
    with _lock:
        _cache.clear()
    clear_embedder_cache()
    clear_runtime_cache()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: object) -> None:
    # Loaded models stay (the engine's cache); what the settings shaped is made again.
    if setting in {"LOOKALIKE", "DATA_DIR", "MODEL_CACHE_DIR"}:
        with _lock:
            _cache.clear()
