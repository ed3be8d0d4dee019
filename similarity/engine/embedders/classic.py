"""Weight-free image embedder on the classic descriptor (lookalike_core.classic), offline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lookalike_core.classic import DIMENSION, IMAGE_SIZE, describe
from PIL import Image

from similarity.engine.embedders.base import Batch, Embedder, preprocessing_description
from similarity.engine.embedders.registry import ModelFamily, Thresholds

SPEC = "classic"


class ClassicEmbedder(Embedder):
    """Hand-made descriptor, no model weights: works anywhere, instantly.

    1. Strip a uniform padding frame (rows and columns almost all of the border colour), then
       trim a uniform background (studio backdrop) to the content box. Two stages, so a
       photo and its padded copy end up with the same crop even when the photo's own edges
       are close to the frame colour.
    2. Shape: 2D DCT-II of a 32x32 grey thumbnail; the 63 lowest non-DC coefficients,
       power-normalised (signed square root) and L2-normalised. A horizontal mirror flips
       the sign of the coefficients odd in x, so those are taken as absolute values: the
       descriptor of a photo and of its mirror image are the same.
    3. Colour: HSV histogram of a 64x64 thumbnail, 8 hue x 3 saturation x 3 value bins for
       coloured pixels plus 8 brightness bins for greys (where hue is noise); square-rooted
       (Hellinger) and L2-normalised.
    4. Blocks scaled by sqrt(0.3) and sqrt(0.7) and concatenated, so the cosine of two
       vectors is 0.3 x shape similarity + 0.7 x colour similarity.

    Robust to resizing, recompression, padding, horizontal mirroring and small crops; a
    good baseline for near-duplicates. Not semantic ("another red bag" is not close unless
    it looks alike).
    """

    name = SPEC
    supports_text = False
    image_size = IMAGE_SIZE
    dimension = DIMENSION

    def preprocess(self, images: Sequence[Image.Image]) -> Batch:
        return np.stack([describe(image) for image in images]).astype(np.float32)

    def _forward(self, batch: Batch) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32)

    def preprocessing(self) -> dict[str, Any]:
        return preprocessing_description(
            client_computable=True,
            image_size=self.image_size,
            colour_order="RGB",
            description=(
                "hand-made descriptor (background trim, DCT of a 32x32 grey thumbnail, HSV "
                "histogram of a 64x64 thumbnail), no weights: lookalike_core.classic computes "
                "it (the core package, which the light client runs)"
            ),
        )

    def identity(self) -> str:
        # No weights: the parameters above are the "weights"; bump v1 when they change.
        return f"{self.name}@v2"


def _load(reference: str, device: str) -> Embedder:
    return ClassicEmbedder()  # no weights, nothing on a device


FAMILY = ModelFamily(
    name="classic",
    names=(SPEC,),
    load=_load,
    uses_torch=False,
    dimension=ClassicEmbedder.dimension,
    preprocessing="background trim, 32x32 grey DCT + 64x64 HSV histogram (no weights)",
    thresholds=Thresholds(
        # On the labelled eval catalog (manage.py evaluate) 0.05 scores pair precision 1.000 /
        # recall 0.823; on the 567 real grocery photos (bench/calibrate_duplicates.py,
        # docs/benchmarks.md) 11 of 160,461 distinct-photo pairs fall under it while it finds
        # 98-100% of resized/recompressed, framed and mirrored copies (68% of 6% crops).
        duplicate=0.05,
        # On generated packshots: resized/recompressed copies <= 0.03, other products
        # 0.03-0.38 (about half under 0.25), noise ~0.69; real shop photos of the right
        # product are no closer than wrong ones (docs/benchmarks.md "Supplier matching").
        similar=0.25,
    ),
)
