"""The core package: its preprocessing spec, the classic descriptor, and its purity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lookalike_core.classic import DIMENSION, dct_matrix, describe
from lookalike_core.pixels import PixelPreprocessor, PixelSpec, PixelSpecError
from PIL import Image

from demo.sample_images import product_image

CLIP_LIKE = PixelSpec(resize="shortest_edge", size=(32, 32), resample="bicubic", crop=(30, 30),
                      rescale=1 / 255, mean=(0.48, 0.45, 0.40), std=(0.26, 0.26, 0.27))


def test_spec_round_trips_through_its_json_form():
    for spec in (CLIP_LIKE, PixelSpec(resize="exact", size=(40, 24), resample="bilinear",
                                      rescale=1.0, mean=(127.0,) * 3, std=(128.0,) * 3,
                                      long_side="round")):
        assert PixelSpec.from_dict(spec.as_dict()) == spec


@pytest.mark.parametrize(("change", "field"), [
    ({"resize": "longest_edge"}, "resize"),
    ({"resample": "sinc"}, "resample"),
    ({"size": [0, 10]}, "size"),
    ({"version": 99}, "version"),
    ({"mean": [1, 2]}, "incomplete"),
    ({"std": [1, 0, 1]}, "mean/std"),
])
def test_a_bad_spec_is_refused_naming_the_field(change, field):
    with pytest.raises(PixelSpecError, match=field):
        PixelSpec.from_dict({**CLIP_LIKE.as_dict(), **change})


def test_missing_keys_are_refused_clearly():
    data = CLIP_LIKE.as_dict()
    del data["std"]
    with pytest.raises(PixelSpecError, match="incomplete"):
        PixelSpec.from_dict(data)


def test_preprocessor_resizes_crops_and_normalises():
    images = [Image.new("RGB", (90, 45), (255, 0, 128)), Image.new("RGB", (20, 70), "white")]
    pixels = PixelPreprocessor(CLIP_LIKE)(images)
    assert pixels.shape == (2, 3, 30, 30) and pixels.dtype == np.float32
    expected = (np.array([255, 0, 128]) / 255 - np.array(CLIP_LIKE.mean)) / np.array(CLIP_LIKE.std)
    assert np.allclose(pixels[0, :, 15, 15], expected, atol=1e-5)
    # transformers floors the long side: 70 * 32 / 20 = 112.
    assert CLIP_LIKE.resized_size(20, 70) == (32, 112)
    assert CLIP_LIKE.resized_size(90, 45) == (64, 32)


def test_numpy_dct_equals_scipys():
    from scipy.fft import dctn

    pixels = np.random.default_rng(0).random((32, 32))
    matrix = dct_matrix(32)
    assert np.allclose(matrix @ pixels @ matrix.T, dctn(pixels, norm="ortho"), atol=1e-12)


def test_classic_descriptor_has_its_dimension_and_is_mirror_blind():
    image = product_image(3, size=120)
    vector = describe(image)
    assert vector.shape == (DIMENSION,)
    mirrored = describe(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert vector @ mirrored > 0.99 * (vector @ vector)


def test_the_core_imports_nothing_of_the_product_django_or_torch():
    code = (
        "import sys, lookalike_core.imaging, lookalike_core.pixels, lookalike_core.classic, "
        "lookalike_core.vectors; "
        "heavy = {'torch', 'django', 'scipy', 'similarity', 'catalog', 'onnxruntime'} "
        "& {name.split('.')[0] for name in sys.modules}; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
