"""Model specs: the default model, and the one parser of what a spec names and how it loads."""

from __future__ import annotations

from dataclasses import dataclass

from similarity.engine.embedders.registry import family_for_spec, model_families, model_family_get

DEFAULT_MODEL = "clip-ViT-B-32"

MSG_BAD_SPEC = "embedder spec must be {families}; got {spec!r}"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: its family and the name or path its backend loads."""

    family: str  # a registered ModelFamily's name (registry.py)
    ref: str  # the hub name or local path, without the family prefix

    @property
    def canonical(self) -> str:
        """The spec as builds and manifests record it (trimmed, prefix restored)."""
        return model_family_get(self.family).canonical(self.ref)


def parse_model_spec(spec: str) -> ModelSpec:
    """``spec`` parsed (whitespace trimmed); ValueError naming it if no family takes it."""
    cleaned = spec.strip() if isinstance(spec, str) else ""
    claimed = family_for_spec(cleaned) if cleaned else None
    if claimed is None or not claimed[1]:
        raise ValueError(MSG_BAD_SPEC.format(spec=spec, families=_accepted()))
    family, reference = claimed
    return ModelSpec(family.name, reference)


def _accepted() -> str:
    forms = [form for family in model_families() for form in family.spec_forms()]
    return " or ".join([", ".join(forms[:-1]), forms[-1]] if len(forms) > 1 else forms)
