"""Embedders on tiny random-weight models loaded by local path, and the decode/embed pipeline."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lookalike_core.imaging import load_image
from PIL import Image, ImageOps

from demo.sample_images import product_image, product_jpeg
from similarity.engine.embedders import (
    Embedder,
    EmbedderLoadError,
    TextNotSupportedError,
    clear_embedder_cache,
    load_embedder,
)
from similarity.engine.embedders.pipeline import EmbeddedBatch, Timings, embed_sources
from tests.similarity.engine.tiny_models import build_tiny_clip, build_tiny_resnet, build_tiny_vit

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may touch the network


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    build_tiny_clip(root / "clip")
    build_tiny_vit(root / "vit")
    build_tiny_vit(root / "vit-no-pooler", pooler=False)
    build_tiny_resnet(root / "resnet")
    return root


SPECS = {
    "classic": lambda root: "classic",
    "clip": lambda root: str(root / "clip"),
    "vit": lambda root: f"transformers:{root / 'vit'}",
    "vit-no-pooler": lambda root: f"transformers:{root / 'vit-no-pooler'}",
    "resnet": lambda root: f"transformers:{root / 'resnet'}",
    "clip-via-transformers": lambda root: f"transformers:{root / 'clip' / '0_CLIPModel'}",
}


@pytest.fixture(params=list(SPECS))
def embedder(request, tiny_dir) -> Embedder:
    return load_embedder(SPECS[request.param](tiny_dir))


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [product_image(seed, size=96) for seed in range(4)]


def assert_unit_rows(vectors: np.ndarray, count: int, dimension: int) -> None:
    assert vectors.shape == (count, dimension)
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_images_gives_unit_float32_rows(embedder, photos):
    vectors = embedder.embed_images(photos)
    assert_unit_rows(vectors, len(photos), embedder.dimension)
    np.testing.assert_allclose(embedder.embed_images(photos), vectors, atol=1e-6)
    similarity = vectors @ vectors.T
    assert similarity[~np.eye(len(photos), dtype=bool)].max() < 0.99999


def test_preprocess_then_forward_equals_embed_images(embedder, photos):
    batch = embedder.preprocess(photos)
    np.testing.assert_allclose(
        embedder.embed_preprocessed(batch), embedder.embed_images(photos), atol=1e-6
    )


def test_no_images_gives_empty_matrix(embedder):
    assert embedder.embed_images([]).shape == (0, embedder.dimension)


def test_text_works_only_with_a_text_tower(embedder):
    if embedder.supports_text:
        assert embedder.embed_texts(["red bag"]).shape == (1, embedder.dimension)
    else:
        with pytest.raises(TextNotSupportedError, match="cannot embed text"):
            embedder.embed_texts(["red bag"])


def test_tiny_clip_embeds_texts_into_the_image_space(tiny_dir, photos):
    clip = load_embedder(str(tiny_dir / "clip"))
    assert clip.supports_text and clip.image_size == 32 and clip.dimension == 16
    texts = clip.embed_texts(["a red bag", "blue shoes", "a red bag"])
    assert_unit_rows(texts, 3, clip.dimension)
    np.testing.assert_allclose(texts[0], texts[2], atol=1e-6)
    assert texts[0] @ texts[1] < 0.99999
    assert clip.embed_images(photos).shape[1] == texts.shape[1]


def test_unused_random_pooler_is_skipped(tiny_dir):
    assert load_embedder(f"transformers:{tiny_dir / 'vit'}")._use_pooler
    assert not load_embedder(f"transformers:{tiny_dir / 'vit-no-pooler'}")._use_pooler


def test_loaded_once_per_process_until_cleared(tiny_dir):
    spec = f"transformers:{tiny_dir / 'vit'}"
    first = load_embedder(spec)
    assert load_embedder(f"  {spec} ") is first
    clear_embedder_cache()
    again = load_embedder(spec)
    assert again is not first and again.identity() == first.identity()


def test_identity_follows_the_weights_not_the_path(tiny_dir, tmp_path):
    original = load_embedder(f"transformers:{tiny_dir / 'vit'}").identity()
    copy = shutil.copytree(tiny_dir / "vit", tmp_path / "elsewhere" / "vit")
    retrained = build_tiny_vit(tmp_path / "retrained" / "vit", seed=1)
    assert original.startswith("transformers:vit@")
    assert load_embedder(f"transformers:{copy}").identity() == original
    assert load_embedder(f"transformers:{retrained}").identity() != original
    assert load_embedder(str(tiny_dir / "clip")).identity().startswith("clip@")
    assert load_embedder("classic").identity() == "classic@v2"


def test_classic_ranks_near_duplicate_above_other_products():
    classic = load_embedder("classic")
    originals = [product_image(seed, size=256) for seed in range(10)]
    copies = [  # resized + recompressed
        load_image(encode_jpeg(original.resize((160, 160)), quality=60)) for original in originals
    ]
    similarity = classic.embed_images(copies) @ classic.embed_images(originals).T
    assert (similarity.argmax(axis=1) == np.arange(10)).all()


def test_unknown_model_fails_fast_with_one_line_message():
    import sentence_transformers  # noqa: F401 - time the lookup, not the import

    started = time.perf_counter()
    with pytest.raises(EmbedderLoadError) as caught:
        load_embedder("no-such-model-xyz")
    assert time.perf_counter() - started < 2
    message = str(caught.value)
    assert "\n" not in message and "'no-such-model-xyz'" in message
    assert "local model directory" in message and "HF_HUB_OFFLINE=1" in message


def test_a_model_neither_cached_nor_downloadable_is_refused_before_its_library_loads(
    monkeypatch,
):
    from similarity.engine.embedders import base

    def loader(name, local_files_only):
        raise AssertionError("the model library was asked although nothing can be loaded")

    with pytest.raises(EmbedderLoadError, match="not in the Hugging Face cache"):
        base.load_pretrained("no-such-model-xyz", loader, repo_ids=["org/no-such-model-xyz"])


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(EmbedderLoadError, match="hub is unreachable"):
        load_embedder("transformers:no-such-org/no-such-model")


def test_missing_or_broken_directory(tmp_path):
    with pytest.raises(EmbedderLoadError, match="does not exist"):
        load_embedder(str(tmp_path / "missing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(EmbedderLoadError, match="Cannot load embedding model") as caught:
        load_embedder(f"transformers:{tmp_path / 'broken'}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("spec", ["", "  ", "transformers:"])
def test_empty_spec_is_rejected(spec):
    with pytest.raises(ValueError, match="embedder spec must be"):
        load_embedder(spec)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_importing_embedders_does_not_import_torch():
    code = (
        "import sys, similarity.engine.embedders, similarity.engine.embedders.pipeline, "
        "similarity.engine.embedders.clip, similarity.engine.embedders.hf, "
        "similarity.engine.embedders.classic; "
        "heavy = {'torch', 'transformers', 'sentence_transformers', 'django'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def jpeg_sources(count: int, broken: set[int] = frozenset()) -> list[tuple[str, bytes]]:
    return [
        (f"article-{i}", b"garbage" if i in broken else product_jpeg(i, size=80, quality=85))
        for i in range(count)
    ]


@pytest.mark.parametrize("spec_key", ["classic", "clip"])
def test_pipeline_keeps_order_skips_broken_and_matches_embed_images(tiny_dir, spec_key):
    embedder = load_embedder(SPECS[spec_key](tiny_dir))
    sources = jpeg_sources(8, broken={3})
    timings, done = Timings(), []
    batches = list(
        embed_sources(embedder, sources, batch_size=3, timings=timings, progress=done.append)
    )
    assert all(isinstance(batch, EmbeddedBatch) for batch in batches)
    keys = [key for batch in batches for key in batch.keys]
    assert keys == [key for key, _ in sources if key != "article-3"]
    failures = [failure for batch in batches for failure in batch.failures]
    assert [key for key, _ in failures] == ["article-3"]
    assert "not an image" in failures[0][1]
    vectors = np.concatenate([batch.vectors for batch in batches])
    expected = embedder.embed_images(
        [load_image(data, target_size=embedder.image_size) for key, data in sources if key in keys]
    )
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert sum(done) == 8
    assert (timings.images, timings.failures, timings.batches) == (7, 1, 3)
    assert timings.wall_seconds > 0 and timings.model_seconds > 0 and timings.decode_seconds > 0


def test_pipeline_reports_a_fully_broken_batch_and_goes_on(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(product_jpeg(1, size=64))
    sources = [("a", b""), ("b", io.BytesIO(b"nope")), ("c", path), ("d", str(tmp_path / "x.jpg"))]
    batches = list(embed_sources(load_embedder("classic"), sources, batch_size=2))
    assert batches[0].keys == [] and batches[0].vectors.shape == (0, 143)
    assert [key for key, _ in batches[0].failures] == ["a", "b"]
    assert batches[1].keys == ["c"] and [key for key, _ in batches[1].failures] == ["d"]


def test_pipeline_can_stop_early_and_validates_arguments():
    stream = embed_sources(load_embedder("classic"), jpeg_sources(40), batch_size=4)
    assert next(stream).keys == ["article-0", "article-1", "article-2", "article-3"]
    stream.close()
    with pytest.raises(ValueError, match="batch_size must be > 0; got 0"):
        next(embed_sources(load_embedder("classic"), [], batch_size=0))
    assert list(embed_sources(load_embedder("classic"), [])) == []


def _scene(seed: int) -> Image.Image:
    """A shop-photo-like image: a product on a busy background that reaches every edge,
    with a light strip along one side (close to a white frame's colour)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(40, 200, size=(12, 16, 3), dtype=np.uint8)
    scene = Image.fromarray(noise).resize((320, 240), Image.Resampling.BICUBIC)
    scene.paste((238, 240, 236), (0, 0, 40, 240))
    scene.paste(product_image(seed, size=150), (110 + seed % 40, 45))
    return scene


def _padded(image: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (image.width + 120, image.height + 60), (255, 255, 255))
    canvas.paste(image, (60, 30))
    return canvas


@pytest.mark.parametrize("variant", ["mirrored", "padded"])
def test_classic_finds_mirrored_and_padded_copies_among_distractors(variant):
    classic = load_embedder("classic")
    scenes = [_scene(seed) for seed in range(40)]
    held_out = range(0, 40, 4)
    change = ImageOps.mirror if variant == "mirrored" else _padded
    copies = [load_image(encode_jpeg(change(scenes[i]), quality=80)) for i in held_out]
    similarity = classic.embed_images(copies) @ classic.embed_images(scenes).T
    assert similarity.argmax(axis=1).tolist() == list(held_out)
