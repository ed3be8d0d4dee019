"""The one embedder provider: builds, workers, matching and API queries share one cache, and
queries run on the runtime their index was built on."""

from __future__ import annotations

import io
import logging
import os

import pytest
from django.test import override_settings

from demo.sample_images import product_image
from similarity import embedders
from similarity.embedders import OtherWeights, embedder_for, embedders_clear
from similarity.engine.embedders import EmbedderLoadError
from similarity.engine.embedders.runtimes import RuntimeUnavailable
from similarity.selectors.search import query_embedder, similar_to_image
from similarity.selectors.store import get_store
from similarity.services.builds.runs import index_build_run
from tests.similarity.engine.tiny_models import build_tiny_clip
from tests.similarity.helpers import make_catalog

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def fresh_provider():
    embedders_clear()
    yield
    embedders_clear()


@pytest.fixture
def gate_calls(monkeypatch) -> list[str]:
    """The runtimes the accuracy gate ran for (the real gate still runs)."""
    calls: list[str] = []
    real = embedders.select_runtime

    def counted(embedder, runtime, **kwargs):
        calls.append(runtime)
        return real(embedder, runtime, **kwargs)

    monkeypatch.setattr(embedders, "select_runtime", counted)
    return calls


def test_one_cache_per_process_keyed_by_model_runtime_and_device():
    first = embedder_for("classic", runtime="torch")
    assert embedder_for(" classic ", runtime="torch") is first  # the canonical spec
    assert first.device == "cpu" and first.runtime.runtime == "torch"
    embedders_clear()
    assert embedder_for("classic", runtime="torch") is not first  # explicit invalidation


@pytest.mark.django_db
def test_queries_use_the_index_runtime_and_the_build_gated_it_once(tmp_path, settings, gate_calls):
    settings.LOOKALIKE = {**settings.LOOKALIKE, "RUNTIME_CALIBRATION_IMAGES": 16}
    model = str(build_tiny_clip(tmp_path / "clip"))
    make_catalog(6)

    build = index_build_run(model=model, runtime="onnx", progress=False)
    loaded = get_store().get()
    embedder = query_embedder(loaded)

    assert build.manifest["runtime"] == "onnx" and embedder.runtime == "onnx"
    assert gate_calls == ["onnx"]  # the build's gate; queries reuse what it made
    assert embedder is embedder_for(model, runtime="onnx").embedder
    assert query_embedder(loaded, for_text=True) is embedder.base  # text: the torch towers

    used = []
    embed_images = embedder.embed_images
    embedder.embed_images = lambda images: used.append(len(images)) or embed_images(images)
    try:
        buffer = io.BytesIO()
        product_image(3, size=96).save(buffer, "JPEG")
        result = similar_to_image(image=buffer.getvalue(), k=2)
    finally:
        del embedder.embed_images
    assert used == [1] and result.results  # the API's image query ran on onnx


def test_a_runtime_that_cannot_run_here_fails_strict_callers_and_falls_back_for_queries(
    caplog,
):
    with pytest.raises(RuntimeUnavailable, match="no torch image module"):
        embedder_for("classic", runtime="onnx")  # builds: an explicit runtime must work
    with caplog.at_level(logging.WARNING):
        provided = embedder_for("classic", runtime="onnx", strict=False)
    assert provided.runtime.runtime == "torch" and provided.runtime.requested == "onnx"
    assert "using the torch fp32 reference" in caplog.text


def test_other_weights_than_the_build_recorded_are_reloaded_once_then_refused(tmp_path):
    model = str(build_tiny_clip(tmp_path / "clip", seed=1))
    old = embedder_for(model, runtime="torch").embedder.identity()
    new = embedder_for(str(build_tiny_clip(tmp_path / "b" / "clip", seed=2)), runtime="torch")
    build_tiny_clip(tmp_path / "clip", seed=2)  # the weights behind the path change

    # A build made with the new weights: the cached old ones are dropped, the new loaded.
    reloaded = embedder_for(model, runtime="torch", identity=new.embedder.identity())
    assert reloaded.embedder.identity() == new.embedder.identity() != old

    # An index of the old weights: they are gone from disk, so the reload cannot help.
    with pytest.raises(OtherWeights) as refused:
        embedder_for(model, runtime="torch", identity=old)
    assert refused.value.expected == old and refused.value.found == new.embedder.identity()
    assert isinstance(refused.value, EmbedderLoadError)  # builds and workers report it as is


def test_a_changed_setting_drops_what_the_settings_shaped(gate_calls):
    embedder_for("classic", runtime="auto")
    embedder_for("classic", runtime="auto")
    assert gate_calls == ["auto"]
    with override_settings(LOOKALIKE={"RUNTIME_MIN_COSINE": 0.9}):
        embedder_for("classic", runtime="auto")
    assert gate_calls == ["auto", "auto"]  # the gate's thresholds changed: gated again


def test_an_unknown_runtime_or_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown embedding runtime 'tensorrt'"):
        embedder_for("classic", runtime="tensorrt")
    with pytest.raises(EmbedderLoadError, match="DEVICE must be cpu, cuda or cuda:<n>"):
        embedder_for("classic", runtime="torch", device="tpu")


def test_auto_is_the_default_runtime():
    from similarity.conf import SimilaritySettings

    assert SimilaritySettings.__dataclass_fields__["runtime"].default == "auto"


@pytest.mark.django_db
def test_a_default_build_runs_auto_says_why_and_later_processes_reuse_the_choice(
    tmp_path, settings, gate_calls, monkeypatch
):
    from similarity.conf import similarity_settings
    from similarity.engine.embedders import runtimes

    settings.LOOKALIKE = {**settings.LOOKALIKE, "RUNTIME": "auto",
                          "RUNTIME_CALIBRATION_IMAGES": 16}
    model = str(build_tiny_clip(tmp_path / "clip"))
    make_catalog(6)
    build = index_build_run(model=model, progress=False)
    assert build.manifest["runtime_requested"] == "auto"
    assert build.manifest["runtime"] in build.manifest["runtime_speeds"]
    assert build.manifest["runtime_reason"].startswith("auto: the fastest runtime here")
    assert list(similarity_settings().runtime_choice_dir.glob("*.json"))

    embedders_clear()  # as a new process: the measured choice is read, not measured again
    monkeypatch.setattr(runtimes, "_fastest_passing", lambda *a: pytest.fail("calibrated"))
    again = index_build_run(model=model, full=True, progress=False)
    assert again.manifest["runtime"] == build.manifest["runtime"]
    assert "remembered in" in again.manifest["runtime_reason"]
