"""Tests for the one model-spec parser shared by load_embedder and the settings."""

from __future__ import annotations

import pytest

from similarity.conf import SIMILARITY_KEYS, model_family
from similarity.engine.embedders import DEFAULT_MODEL, ModelSpec, canonical_spec, parse_model_spec


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("classic", ModelSpec("classic", "classic")),
        (" transformers: /models/dino ", ModelSpec("transformers", "/models/dino")),
        ("clip-ViT-B-32", ModelSpec("clip", "clip-ViT-B-32")),
        ("/models/my-clip", ModelSpec("clip", "/models/my-clip")),
    ],
)
def test_specs_parse_into_family_and_reference(spec, parsed):
    assert parse_model_spec(spec) == parsed
    assert model_family(spec) == parsed.family


def test_canonical_spec_restores_the_prefix():
    assert canonical_spec(" transformers: org/vit ") == "transformers:org/vit"
    assert parse_model_spec("transformers:org/vit").ref == "org/vit"


@pytest.mark.parametrize("spec", ["", "  ", "transformers:", "transformers:  ", None])
def test_empty_specs_are_refused_with_the_value(spec):
    with pytest.raises(ValueError, match=f"got {spec!r}"):
        parse_model_spec(spec)


def test_settings_default_is_the_engine_default():
    assert SIMILARITY_KEYS["MODEL"].default == DEFAULT_MODEL
