"""Synthetic catalogs of vectors for duplicate-group tests and benchmarks (no images).

``chained_vectors`` makes the shapes that broke single-linkage grouping: chains of
look-alikes (each a small step from the last, the ends far apart, like one lamp in many
colours), tight clusters of real near-copies, and unrelated singletons.
"""

from __future__ import annotations

import numpy as np

CHAIN_STEP_DISTANCE = 0.03  # cosine distance between neighbors on a chain (< 0.05)
COPY_NOISE = 0.02  # spread of a near-copy cluster around its centre


def chained_vectors(
    n: int = 5000, dim: int = 64, *, chain_length: int = 20, copies: int = 4, seed: int = 0
) -> np.ndarray:
    """(n, dim) unit float32 rows: 40% on chains, 40% in near-copy clusters, 20% singletons."""
    rng = np.random.default_rng(seed)
    out = []
    step = np.arccos(1.0 - CHAIN_STEP_DISTANCE)
    for _ in range(int(0.4 * n) // chain_length):
        centre, direction = _orthonormal_pair(rng, dim)
        angles = step * np.arange(chain_length)
        out.append(np.cos(angles)[:, None] * centre + np.sin(angles)[:, None] * direction)
    for _ in range(int(0.4 * n) // copies):
        centre = _unit(rng.standard_normal(dim))
        noise = COPY_NOISE / np.sqrt(dim) * rng.standard_normal((copies, dim))
        out.append(centre + noise)
    done = sum(len(block) for block in out)
    out.append(rng.standard_normal((n - done, dim)))
    vectors = np.concatenate(out).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def catalog_from_vectors(vectors: np.ndarray, *, model: str = "synthetic") -> str:
    """Articles + stored embeddings for ``vectors`` and the current index over them.

    Returns the model identity the vectors are stored under. The articles count as
    downloaded (no image files): enough for everything that reads vectors and ids.
    """
    from catalog.models import Article
    from similarity.models import Embedding
    from similarity.services.indexing.update import collect_inputs, index_update

    identity = f"{model}@v1"
    Article.objects.bulk_create(
        [Article(article_id=f"V{i:06d}", title=f"Synthetic {i}", image_sha256=f"s{i}",
                 image_url=f"http://127.0.0.1:9/V{i:06d}.jpg",
                 download_status=Article.DownloadStatus.DOWNLOADED)
         for i in range(len(vectors))],
        batch_size=2000,
    )
    pks = Article.objects.filter(article_id__startswith="V").order_by("article_id")
    rows = pks.values_list("pk", "image_sha256")
    Embedding.objects.bulk_create(
        [Embedding(article_id=pk, model=identity, image_sha256=sha, dimension=vectors.shape[1],
                   vector=vector.astype("<f4").tobytes())
         for (pk, sha), vector in zip(rows, vectors, strict=True)],
        batch_size=2000,
    )
    index_update(inputs=collect_inputs(identity), model=model, identity=identity,
                 index_type="flat")
    return identity


def _orthonormal_pair(rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
    first = _unit(rng.standard_normal(dim))
    second = rng.standard_normal(dim)
    second = _unit(second - (second @ first) * first)
    return first, second


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)
