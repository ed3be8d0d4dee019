"""Vector helpers both sides apply the same way (unit rows, float32)."""

from __future__ import annotations

from typing import Any

import numpy as np


def l2_normalise(vectors: Any) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as C-contiguous float32."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        array = array.reshape(array.shape[0], -1)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    array = array / np.maximum(norms, np.float32(1e-12))
    return np.ascontiguousarray(array, dtype=np.float32)
