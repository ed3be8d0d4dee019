"""Embedding runtimes on tiny models: agreement with torch fp32, ONNX cache, accuracy gate, auto."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.sample_images import product_image
from similarity.engine.embedders import load_embedder, runtimes
from similarity.engine.embedders import onnx as onnx_runtime
from similarity.engine.embedders.runtimes import (
    RuntimeEmbedder,
    RuntimeRefused,
    RuntimeUnavailable,
    clear_runtime_cache,
    make_runtime,
    measure_agreement,
    select_runtime,
    validate_runtime,
)
from tests.similarity.engine.tiny_models import build_tiny_clip, build_tiny_resnet, build_tiny_vit

os.environ["HF_HUB_OFFLINE"] = "1"

IMPOSSIBLE = 0.99999999  # above what int8 reaches on a tiny random model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("runtime-models")
    return {
        "clip": str(build_tiny_clip(root / "clip")),
        "vit": f"transformers:{build_tiny_vit(root / 'vit')}",
        "resnet": f"transformers:{build_tiny_resnet(root / 'resnet')}",
    }


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [product_image(seed, size=80) for seed in range(24)]


@pytest.fixture(autouse=True)
def fresh_runtime_cache():
    clear_runtime_cache()
    yield
    clear_runtime_cache()


# Tolerances on unit vectors: onnx is the same fp32 maths; bf16 and int8 are approximations.
TOLERANCES = {"onnx": ("max_abs_diff", 1e-4), "torch-bf16": ("cosine", 0.999),
              "onnx-int8": ("cosine", 0.99)}


@pytest.mark.parametrize("runtime", list(TOLERANCES))
@pytest.mark.parametrize("model", ["clip", "vit", "resnet"])
def test_runtime_matches_the_torch_reference(models, shared_cache, photos, model, runtime):
    reference = load_embedder(models[model])
    candidate = make_runtime(reference, runtime, cache_dir=shared_cache, threads=1)
    assert candidate.identity() == reference.identity()  # same model, same stored vectors
    assert candidate.dimension == reference.dimension
    vectors = candidate.embed_images(photos)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    agreement = measure_agreement(reference.embed_images(photos), vectors)
    kind, bound = TOLERANCES[runtime]
    if kind == "max_abs_diff":
        assert agreement.max_abs_diff < bound
    else:
        assert agreement.min_cosine > bound


def test_onnx_texts_stay_on_torch(models, shared_cache):
    reference = load_embedder(models["clip"])
    candidate = make_runtime(reference, "onnx", cache_dir=shared_cache)
    np.testing.assert_array_equal(
        candidate.embed_texts(["red bag"]), reference.embed_texts(["red bag"])
    )


def test_export_and_quantisation_are_cached_on_disk(models, tmp_path, photos):
    embedder = load_embedder(models["vit"])
    before = dict(onnx_runtime.work_counter)
    first = make_runtime(embedder, "onnx-int8", cache_dir=tmp_path)
    assert onnx_runtime.work_counter["export"] == before.get("export", 0) + 1
    assert onnx_runtime.work_counter["quantise"] == before.get("quantise", 0) + 1
    entry = first.model_path.parent
    assert entry.parent == tmp_path and entry.name.startswith("transformers_vit-")
    info = json.loads((entry / onnx_runtime.INFO_FILE).read_text())
    assert info["identity"] == embedder.identity() and info["opset"] == onnx_runtime.OPSET
    assert {"torch", "onnx", "onnxruntime"} <= set(info)
    mtimes = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]

    clear_runtime_cache()
    second = make_runtime(embedder, "onnx-int8", cache_dir=tmp_path)
    make_runtime(embedder, "onnx", cache_dir=tmp_path)
    assert onnx_runtime.work_counter["export"] == before.get("export", 0) + 1
    assert onnx_runtime.work_counter["quantise"] == before.get("quantise", 0) + 1
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == mtimes
    np.testing.assert_array_equal(first.embed_images(photos), second.embed_images(photos))


def test_cache_key_follows_identity_and_versions(monkeypatch):
    key = onnx_runtime.cache_key("clip@abc")
    assert key == onnx_runtime.cache_key("clip@abc")
    assert key != onnx_runtime.cache_key("clip@abd")
    monkeypatch.setattr(onnx_runtime, "OPSET", onnx_runtime.OPSET + 1)
    assert key != onnx_runtime.cache_key("clip@abc")


def test_gate_refuses_a_runtime_below_the_threshold(models, shared_cache, photos):
    embedder = load_embedder(models["clip"])
    with pytest.raises(RuntimeRefused, match=r"runtime 'onnx-int8' disagrees .* mean cosine"):
        select_runtime(
            embedder, "onnx-int8", calibration=photos, cache_dir=shared_cache,
            min_cosine=IMPOSSIBLE,
        )
    chosen, choice = select_runtime(embedder, "onnx-int8", calibration=photos,
                                    cache_dir=shared_cache)
    assert choice.runtime == "onnx-int8" and chosen.runtime == "onnx-int8"
    assert choice.agreement.mean_cosine >= runtimes.DEFAULT_MIN_COSINE
    assert choice.as_manifest()["runtime_agreement"]["top10_overlap"] >= 0.9


class NoisyEmbedder(RuntimeEmbedder):
    """A deliberately broken runtime: the reference's vectors plus heavy noise."""

    runtime = "onnx-int8"

    def _forward(self, batch):
        vectors = self.base._forward(batch)
        return vectors + np.random.default_rng(0).normal(0, 1, vectors.shape).astype("f4")


def test_auto_falls_back_past_a_broken_runtime(models, shared_cache, photos, monkeypatch):
    real_make_runtime = runtimes.make_runtime

    def make(embedder, runtime, **kwargs):
        if runtime == "onnx-int8":
            return NoisyEmbedder(embedder)
        if runtime == "torch-bf16":
            raise RuntimeUnavailable("no native bf16 here")
        return real_make_runtime(embedder, runtime, **kwargs)

    monkeypatch.setattr(runtimes, "make_runtime", make)
    monkeypatch.setattr(runtimes, "cpu_has_native_bf16", lambda: True)
    embedder = load_embedder(models["resnet"])
    chosen, choice = select_runtime(embedder, "auto", calibration=photos, cache_dir=shared_cache)
    # onnx and torch both pass; auto keeps whichever ran the calibration batch faster.
    assert set(choice.speeds) == {"onnx", "torch"}
    assert choice.runtime == max(choice.speeds, key=choice.speeds.get)
    assert getattr(chosen, "runtime", "torch") == choice.runtime
    assert [s["runtime"] for s in choice.skipped] == ["onnx-int8", "torch-bf16"]
    assert "disagrees" in choice.skipped[0]["reason"]
    # The decision is cached per identity: no second calibration run.
    again_chosen, again = select_runtime(embedder, "auto", calibration=[], cache_dir=shared_cache)
    assert again is choice and again_chosen is chosen


def test_auto_ends_at_torch_when_nothing_else_passes(models, shared_cache, photos):
    embedder = load_embedder(models["vit"])
    chosen, choice = select_runtime(
        embedder, "auto", calibration=photos, cache_dir=shared_cache, min_cosine=1.01
    )
    assert chosen is embedder and choice.runtime == "torch"
    assert "onnx-int8" in [s["runtime"] for s in choice.skipped]


def test_weight_free_embedder_has_only_the_reference_runtime(shared_cache, photos):
    classic = load_embedder("classic")
    with pytest.raises(RuntimeUnavailable):
        make_runtime(classic, "onnx", cache_dir=shared_cache)
    assert select_runtime(classic, "auto", calibration=photos)[1].runtime == "torch"


def test_unknown_runtime_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"'tensorrt'.*torch, torch-bf16, onnx, onnx-int8, auto"):
        validate_runtime("tensorrt")
    assert validate_runtime(" ONNX ") == "onnx"


@pytest.mark.django_db
def test_build_records_the_runtime_and_refuses_a_failing_one(models, settings):
    from similarity.errors import BuildFailed
    from similarity.services.builds.runs import index_build_run
    from tests.similarity.helpers import make_catalog

    make_catalog(12)
    settings.LOOKALIKE = {**settings.LOOKALIKE, "RUNTIME_CALIBRATION_IMAGES": 16}
    build = index_build_run(model=models["clip"], runtime="onnx", progress=False)
    assert build.manifest["runtime"] == "onnx"
    assert build.manifest["runtime_agreement"]["max_abs_diff"] < 1e-4
    assert (Path(settings.MODEL_CACHE_DIR) / "onnx-cache").is_dir()

    settings.LOOKALIKE = {**settings.LOOKALIKE, "RUNTIME_MIN_COSINE": IMPOSSIBLE}
    with pytest.raises(BuildFailed, match="onnx-int8"):
        index_build_run(model=models["clip"], runtime="onnx-int8", progress=False)


def test_damaged_cached_onnx_model_is_refused_removed_and_re_exported(models, tmp_path):
    from similarity.engine.embedders.onnx import OnnxEmbedder, onnx_model_path
    from similarity.engine.embedders.runtimes import RuntimeUnavailable

    tiny_clip = load_embedder(models["clip"])
    path = onnx_model_path(tiny_clip, tmp_path)
    path.write_bytes(b"")  # e.g. a crash or a full disk left an empty file
    with pytest.raises(RuntimeUnavailable, match="removed and will be exported again"):
        OnnxEmbedder(tiny_clip, cache_dir=tmp_path, threads=1)
    assert not path.exists()
    again = OnnxEmbedder(tiny_clip, cache_dir=tmp_path, threads=1)
    assert again.embed_images([Image.new("RGB", (40, 40), "red")]).shape[0] == 1


def _auto_with_memory(embedder, photos, shared_cache, choice_dir):
    return select_runtime(embedder, "auto", calibration=photos, cache_dir=shared_cache,
                          choice_dir=choice_dir)


def test_auto_remembers_its_choice_per_machine_and_model(models, shared_cache, photos,
                                                         tmp_path, monkeypatch):
    embedder = load_embedder(models["vit"])
    chosen, choice = _auto_with_memory(embedder, photos, shared_cache, tmp_path)
    assert choice.runtime in choice.speeds and choice.reason.startswith("auto: the fastest")
    [stored] = tmp_path.glob("*.json")
    record = json.loads(stored.read_text())
    assert record["choice"]["runtime"] == choice.runtime
    assert {"cpu", "cpu_flags", "torch", "onnxruntime", "threads"} <= set(record["fingerprint"])

    # A new process (caches cleared) on the same machine does not calibrate again.
    clear_runtime_cache()

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibrated although a valid choice was remembered")

    monkeypatch.setattr(runtimes, "_fastest_passing", no_calibration)
    again_chosen, again = _auto_with_memory(embedder, photos, shared_cache, tmp_path)
    assert again.runtime == choice.runtime and again.speeds == choice.speeds
    assert "remembered in" in again.reason and again.measured_at == record["measured_at"]
    np.testing.assert_allclose(again_chosen.embed_images(photos[:3]),
                               chosen.embed_images(photos[:3]), atol=1e-5)


@pytest.mark.parametrize("change", ["library", "cpu", "damaged"])
def test_a_stale_or_damaged_remembered_choice_is_measured_again(models, shared_cache, photos,
                                                                tmp_path, monkeypatch, change):
    from similarity.engine.embedders import choice_cache

    embedder = load_embedder(models["resnet"])
    _auto_with_memory(embedder, photos, shared_cache, tmp_path)
    [stored] = tmp_path.glob("*.json")
    clear_runtime_cache()
    if change == "library":
        versions = choice_cache.library_versions()
        monkeypatch.setattr(choice_cache, "library_versions",
                            lambda: {**versions, "onnxruntime": "99.0"})
    elif change == "cpu":
        monkeypatch.setattr(choice_cache, "cpu_description",
                            lambda: {"cpu": "Other CPU", "cpu_flags": "0"})
    else:
        stored.write_text("{not json")
    calls = []
    real = runtimes._fastest_passing
    monkeypatch.setattr(runtimes, "_fastest_passing", lambda *a: calls.append(a) or real(*a))
    _chosen, choice = _auto_with_memory(embedder, photos, shared_cache, tmp_path)
    assert len(calls) == 1 and "remembered" not in choice.reason
    record = json.loads(stored.read_text())  # replaced by the new measurement
    assert record["fingerprint"] == choice_cache.fingerprint(threads=None)


def test_reason_says_why_for_explicit_and_reference_runtimes(models, shared_cache, photos):
    embedder = load_embedder(models["clip"])
    _chosen, choice = select_runtime(embedder, "onnx", calibration=photos, cache_dir=shared_cache)
    assert choice.reason.startswith("onnx was asked for and it passed the accuracy gate")
    assert choice.as_manifest()["runtime_reason"] == choice.reason
    _chosen, torch_choice = select_runtime(embedder, "torch", calibration=photos)
    assert "reference" in torch_choice.reason
