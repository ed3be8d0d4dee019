"""Embedder.preprocessing(): following the published steps gives the embedder's own pixels."""

from __future__ import annotations

import re

import numpy as np
import pytest
from lookalike_core.pixels import PixelPreprocessor, PixelSpec
from PIL import Image

from similarity.engine.embedders import load_embedder
from tests.similarity.engine.tiny_models import build_tiny_clip, build_tiny_vit

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def follow(description: dict, image: Image.Image) -> np.ndarray:
    """What a client would compute from the description alone: (3, h, w) float32."""
    resample = RESAMPLE[description["resample"]]
    resize = description["resize"]
    if match := re.match(r"shortest edge to (\d+)", resize):
        side = int(match.group(1))
        width, height = image.size
        cut = round if "long side rounded" in resize else int
        size = (side, cut(side * height / width)) if width <= height else (
            cut(side * width / height), side)
        image = image.resize(size, resample)
    elif match := re.match(r"to (\d+)x(\d+)", resize):
        image = image.resize((int(match.group(1)), int(match.group(2))), resample)
    if match := re.match(r"centre (\d+)x(\d+)", description["crop"]):
        crop_w, crop_h = int(match.group(1)), int(match.group(2))
        left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    pixels = np.asarray(image.convert(description["colour_order"]), dtype=np.float32)
    pixels = pixels * np.float32(description["rescale"])
    pixels = (pixels - np.float32(description["mean"])) / np.float32(description["std"])
    return pixels.transpose(2, 0, 1)


@pytest.mark.parametrize("kind", ["clip", "vit"])
def test_published_preprocessing_reproduces_the_model_inputs(tmp_path, kind):
    if kind == "clip":
        embedder = load_embedder(str(build_tiny_clip(tmp_path / "clip")))
    else:
        embedder = load_embedder("transformers:" + str(build_tiny_vit(tmp_path / "vit")))
    description = embedder.preprocessing()
    assert description["client_computable"] is True
    assert description["image_size"] == 32 and description["colour_order"] == "RGB"
    images = [Image.effect_noise(size, 64).convert("RGB") for size in ((97, 61), (50, 131))]
    batch = embedder.preprocess(images)
    expected = embedder.pixel_values(batch).float().numpy()
    client = np.stack([follow(description, image) for image in images])
    assert client.shape == expected.shape
    assert float(np.abs(client - expected).max()) < 1e-4
    # The machine-readable spec, run by the core as the light client runs it: same pixels.
    core = PixelPreprocessor(PixelSpec.from_dict(description["spec"]))(images)
    assert float(np.abs(core - expected).max()) < 1e-4


def test_efficientnet_published_preprocessing_reproduces_its_inputs():
    embedder = load_embedder("efficientnet-lite0")
    description = embedder.preprocessing()
    assert description["client_computable"] is True
    assert description["mean"] == [127.0] * 3 and description["std"] == [128.0] * 3
    # Long sides that round up (61x151 -> 633.7, 640x427 -> 383.7), one that does not, a square.
    sizes = ((97, 61), (61, 151), (300, 300), (640, 427))
    images = [Image.effect_noise(size, 64).convert("RGB") for size in sizes]
    expected = embedder.pixel_values(embedder.preprocess(images)).float().numpy()
    client = np.stack([follow(description, image) for image in images])
    assert client.shape == expected.shape == (len(images), 3, 224, 224)
    assert float(np.abs(client - expected).max()) < 1e-4
    core = PixelPreprocessor(PixelSpec.from_dict(description["spec"]))(images)
    assert np.array_equal(core, expected)


def test_classic_is_client_computable_by_the_core():
    description = load_embedder("classic").preprocessing()
    assert description["client_computable"] is True and description["spec"] is None
    assert "lookalike_core.classic" in description["description"]
