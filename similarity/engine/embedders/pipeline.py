"""Embed many image sources: decode + preprocess in threads, overlapped with model inference.

Threads vs cores: torch uses every core for the forward pass (``configure_torch_threads``)
and decoding runs in ``decode_workers`` threads (default 2). Pillow's decoders and
resamplers and the numpy work in image processors release the GIL, so decoding really
runs in parallel with the forward pass. On a 2-core machine the two compete for cores,
but the forward pass of a small batch rarely keeps both cores busy, so overlapping still
beats running the stages in turn, and the model never waits for a JPEG to decode.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from lookalike_core.imaging import ImageDecodeError, ImageSource, load_image
from PIL import Image

from similarity.engine.embedders.base import Batch, Embedder

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass
class EmbeddedBatch(Generic[K]):
    """Vectors for ``keys`` (row i is keys[i]) and the sources of this chunk that failed."""

    keys: list[K]
    vectors: np.ndarray  # (len(keys), dimension) float32, L2-normalised
    failures: list[tuple[K, str]] = field(default_factory=list)  # (key, reason)


@dataclass
class Timings:
    """Where the time went; updated after every batch, so valid even if iteration stops early.

    ``decode_seconds`` adds up the time of all decode threads (so it can exceed the wall
    time); ``model_seconds`` is the forward passes; ``wall_seconds`` is start to last batch,
    including the time the consumer spent between batches.
    """

    images: int = 0
    failures: int = 0
    batches: int = 0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    wall_seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "images": self.images,
            "failures": self.failures,
            "batches": self.batches,
            "decode_seconds": round(self.decode_seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
        }


@dataclass
class _Prepared(Generic[K]):
    keys: list[K]
    batch: Batch | None
    failures: list[tuple[K, str]]
    seconds: float


def embed_sources(
    embedder: Embedder,
    sources: Iterable[tuple[K, ImageSource]],
    *,
    batch_size: int = 32,
    decode_workers: int = 2,
    progress: Callable[[int], object] | None = None,
    timings: Timings | None = None,
) -> Iterator[EmbeddedBatch[K]]:
    """Yield embeddings for ``(key, source)`` pairs in input order, one batch at a time.

    Each chunk of ``batch_size`` sources is decoded (JPEGs at the embedder's
    ``image_size``) and preprocessed in a worker thread while the model embeds the previous
    chunk; at most ``decode_workers + 1`` chunks are in flight, so memory stays bounded.
    Undecodable sources are skipped, logged and listed in the batch's ``failures``; a chunk
    with no good image yields an empty batch carrying only failures. ``progress`` (e.g. a
    tqdm bar's ``update``) gets the number of sources done after each batch; ``timings``,
    if given, is filled in as the run goes.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0; got {batch_size}")
    if decode_workers <= 0:
        raise ValueError(f"decode_workers must be > 0; got {decode_workers}")
    timings = timings if timings is not None else Timings()
    started = time.perf_counter()
    chunks = _chunked(iter(sources), batch_size)
    pending: deque[Future[_Prepared[K]]] = deque()
    with ThreadPoolExecutor(decode_workers, thread_name_prefix="embed-decode") as pool:
        try:
            for chunk in itertools.islice(chunks, decode_workers + 1):
                pending.append(pool.submit(_prepare, embedder, chunk))
            while pending:
                prepared = pending.popleft().result()
                next_chunk = next(chunks, None)
                if next_chunk is not None:
                    pending.append(pool.submit(_prepare, embedder, next_chunk))
                model_started = time.perf_counter()
                if prepared.batch is None:
                    vectors = np.zeros((0, embedder.dimension), dtype=np.float32)
                else:
                    vectors = embedder.embed_preprocessed(prepared.batch)
                timings.model_seconds += time.perf_counter() - model_started
                timings.decode_seconds += prepared.seconds
                timings.images += len(prepared.keys)
                timings.failures += len(prepared.failures)
                timings.batches += 1
                timings.wall_seconds = time.perf_counter() - started
                if progress is not None:
                    progress(len(prepared.keys) + len(prepared.failures))
                yield EmbeddedBatch(prepared.keys, vectors, prepared.failures)
                timings.wall_seconds = time.perf_counter() - started
        finally:
            for future in pending:  # consumer stopped early: do not decode what nobody reads
                future.cancel()


def _chunked(
    pairs: Iterator[tuple[K, ImageSource]], size: int
) -> Iterator[list[tuple[K, ImageSource]]]:
    while chunk := list(itertools.islice(pairs, size)):
        yield chunk


def _prepare(embedder: Embedder, chunk: list[tuple[K, ImageSource]]) -> _Prepared[K]:
    started = time.perf_counter()
    keys: list[K] = []
    images: list[Image.Image] = []
    failures: list[tuple[K, str]] = []
    for key, source in chunk:
        try:
            images.append(load_image(source, target_size=embedder.image_size))
            keys.append(key)
        except ImageDecodeError as error:
            _skip(failures, key, error.reason)
    batch = None
    if images:
        try:
            batch = embedder.preprocess(images)
        except Exception:
            # One image the processor rejects must not sink the chunk: find it, keep the rest.
            keys, images = _isolate_preprocess_failures(embedder, keys, images, failures)
            batch = embedder.preprocess(images) if images else None
    return _Prepared(keys, batch, failures, time.perf_counter() - started)


def _isolate_preprocess_failures(
    embedder: Embedder,
    keys: list[K],
    images: list[Image.Image],
    failures: list[tuple[K, str]],
) -> tuple[list[K], list[Image.Image]]:
    good_keys, good_images = [], []
    for key, image in zip(keys, images, strict=True):
        try:
            embedder.preprocess([image])
        except Exception as error:
            _skip(failures, key, f"preprocessing failed ({type(error).__name__}: {error})")
        else:
            good_keys.append(key)
            good_images.append(image)
    return good_keys, good_images


def _skip(failures: list[tuple[K, str]], key: K, reason: str) -> None:
    logger.warning("Skipping image %r: %s", key, reason)
    failures.append((key, reason))
