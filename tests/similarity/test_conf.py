"""The settings objects: built once per process, rebuilt after a settings change; thresholds
fall back for families that declare none."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from catalog.conf import catalog_settings
from similarity.conf import similarity_settings
from similarity.engine.embedders import ModelFamily, register, unregister
from similarity.engine.embedders.classic import ClassicEmbedder
from similarity.engine.embedders.registry import FALLBACK_THRESHOLDS, family_thresholds


def test_settings_are_built_once_and_rebuilt_when_lookalike_changes(settings):
    first = similarity_settings()
    assert similarity_settings() is first  # one object per process, not one per read
    assert catalog_settings() is catalog_settings()
    settings.LOOKALIKE = {**settings.LOOKALIKE, "MAX_K": 7, "DOWNLOAD_WORKERS": 3}
    rebuilt = similarity_settings()
    assert rebuilt is not first
    assert (rebuilt.max_k, first.max_k) == (7, 100)
    assert catalog_settings().download_workers == 3


def test_django_settings_it_reads_reset_it_too(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "elsewhere"
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "name": "nightly", "timeout": 60}
    conf = similarity_settings()
    assert conf.index_root == tmp_path / "elsewhere" / "index"
    settings.MODEL_CACHE_DIR = tmp_path / "machine"
    assert similarity_settings().onnx_cache_dir == tmp_path / "machine" / "onnx-cache"
    assert similarity_settings().runtime_choice_dir == tmp_path / "machine" / "auto-choices"
    assert (conf.task_queue, conf.task_timeout) == ("nightly", 60.0)
    assert catalog_settings().data_dir == Path(tmp_path / "elsewhere")


def test_values_are_typed_and_cleaned_where_they_are_declared(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "API_AUTH": " Token ", "THREADS": 0,
                          "DEVICE": "CPU", "RUNTIME": "ONNX", "DUPLICATE_THRESHOLD": "0.1"}
    conf = similarity_settings()
    assert (conf.api_auth, conf.device, conf.runtime) == ("token", "cpu", "onnx")
    assert conf.threads >= 1  # 0 = one per core
    assert conf.duplicate_threshold == 0.1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SHARD_SIZE": 0}, "LOOKALIKE_SHARD_SIZE must be >= 1; got 0"),
        ({"API_AUTH": "closed"}, "LOOKALIKE_API_AUTH must be one of open, token; got 'closed'"),
        ({"MAX_K": "many"}, "LOOKALIKE_MAX_K must be int; got 'many'"),
    ],
)
def test_a_bad_value_is_refused_naming_key_and_value(settings, overrides, message):
    settings.LOOKALIKE = {**settings.LOOKALIKE, **overrides}
    with pytest.raises(ImproperlyConfigured, match=message):
        similarity_settings()


def test_runtime_keys_are_part_of_the_one_object(settings):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "RUNTIME_MIN_COSINE": 0.99}
    assert similarity_settings().runtime_min_cosine == 0.99


def test_a_family_without_thresholds_falls_back(settings):
    family = ModelFamily(name="plain", names=("plain-v1",), uses_torch=False,
                         load=lambda reference, device: ClassicEmbedder())
    register(family)
    try:
        conf = similarity_settings()
        assert conf.duplicate_threshold_for("plain-v1") == FALLBACK_THRESHOLDS.duplicate
        assert conf.similar_threshold_for("plain-v1") == FALLBACK_THRESHOLDS.similar
    finally:
        unregister("plain")
    # A build recorded by a family that is no longer registered: the fallback, no KeyError.
    assert family_thresholds("plain") == FALLBACK_THRESHOLDS
    settings.LOOKALIKE = {**settings.LOOKALIKE, "SIMILAR_THRESHOLD": 0.3}
    assert similarity_settings().similar_threshold_for("classic") == 0.3
