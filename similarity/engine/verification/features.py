"""Local features of one image (SIFT keypoints and descriptors) and their on-disk form.

Features depend on the image only, never on the embedding model: the store keys them by the
image's SHA-256, so a model change, a re-embed or an incremental build reuses them.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Measured on realphotos/grocery (docs/benchmarks.md, "Verification"): SIFT beats ORB there
# (hit@1 0.51 against 0.46, `same` precision 0.98 against 0.90 at a third of the time per
# pair), and RootSIFT (L1-normalised square root of SIFT) adds a little over plain SIFT.
WORKING_SIDE = 640  # longer side a bigger image is reduced to (smaller ones are kept)
MAX_KEYPOINTS = 1500  # strongest SIFT keypoints kept per image
# Half OpenCV's default (0.04): shop photos and packshots are small and soft; 0.02 keeps
# weaker corners and raised `same` recall from 0.26 to 0.30 at the same precision.
CONTRAST_THRESHOLD = 0.02
FEATURES_FORMAT = 1  # bump when the extraction changes: old files are recomputed

ERR_NOT_FEATURES = "{path}: not a local-features file of format {version}"


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoint positions (x, y in working-side pixels), their SIFT descriptors (uint8, 128
    each) and the working image's (width, height)."""

    points: np.ndarray  # float32 (n, 2)
    descriptors: np.ndarray  # uint8 (n, 128)
    size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.descriptors.nbytes)

    def root_sift(self) -> np.ndarray:
        """RootSIFT descriptors (float32): Hellinger-kernel SIFT, matched with L2."""
        values = self.descriptors.astype(np.float32)
        values /= values.sum(axis=1, keepdims=True) + 1e-7
        return np.sqrt(values)


_SIFT = threading.local()  # one detector per thread: cv2 objects are not shared safely


def _detector(max_keypoints: int) -> cv2.SIFT:
    cached: dict[int, cv2.SIFT] = getattr(_SIFT, "by_budget", {})
    if max_keypoints not in cached:
        cached[max_keypoints] = cv2.SIFT.create(nfeatures=max_keypoints,
                                                contrastThreshold=CONTRAST_THRESHOLD)
        _SIFT.by_budget = cached
    return cached[max_keypoints]


def working_grey(image: Image.Image, *, side: int = WORKING_SIDE) -> np.ndarray:
    """``image`` in grey, its longer side reduced to ``side`` when longer (time; SIFT is
    scale-invariant). Smaller images are kept as they are: scaling a 200 px packshot up
    to 640 px made more, weaker keypoints and lowered `same` recall (0.25 against 0.26 at
    the same precision, docs/benchmarks.md)."""
    grey = np.asarray(image.convert("L"))
    height, width = grey.shape
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey


def extract_features(
    image: Image.Image, *, side: int = WORKING_SIDE, max_keypoints: int = MAX_KEYPOINTS
) -> LocalFeatures:
    """SIFT keypoints and descriptors of ``image`` at the working side."""
    grey = working_grey(image, side=side)
    keypoints, descriptors = _detector(max_keypoints).detectAndCompute(grey, None)
    keypoints = keypoints[:max_keypoints]  # SIFT keeps ties at the cut: one or two more
    if descriptors is not None:
        descriptors = descriptors[:max_keypoints]
    points = np.array([keypoint.pt for keypoint in keypoints], dtype=np.float32).reshape(-1, 2)
    if descriptors is None:
        descriptors = np.zeros((0, 128), dtype=np.float32)
    # OpenCV's SIFT descriptors are whole numbers in 0..255 stored as float32: uint8 is exact.
    packed = np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)
    return LocalFeatures(points=points, descriptors=packed,
                         size=(int(grey.shape[1]), int(grey.shape[0])))


def features_bytes(features: LocalFeatures) -> bytes:
    """The features as a small .npz (what the store writes)."""
    buffer = io.BytesIO()
    np.savez(buffer, version=np.int32(FEATURES_FORMAT), points=features.points,
             descriptors=features.descriptors, size=np.array(features.size, dtype=np.int32))
    return buffer.getvalue()


def features_from_bytes(data: bytes, *, path: str = "<bytes>") -> LocalFeatures:
    """Features from ``features_bytes`` output; ValueError for anything else."""
    try:
        with np.load(io.BytesIO(data)) as values:
            if int(values["version"]) != FEATURES_FORMAT:
                raise ValueError(ERR_NOT_FEATURES.format(path=path, version=FEATURES_FORMAT))
            size = values["size"]
            return LocalFeatures(points=values["points"].astype(np.float32),
                                 descriptors=values["descriptors"].astype(np.uint8),
                                 size=(int(size[0]), int(size[1])))
    except (OSError, KeyError, EOFError, IndexError, zipfile.BadZipFile) as exc:
        raise ValueError(ERR_NOT_FEATURES.format(path=path, version=FEATURES_FORMAT)) from exc


class FeatureStore:
    """Catalog images' features on disk, one small file per image content (SHA-256), with a
    bounded in-memory LRU in front (``memory_items`` files).

    Content addressing makes reuse automatic: an incremental build computes only images it
    has not seen, a model change recomputes nothing, and two articles with the same photo
    share one file. Writes go to a temp file then ``os.replace``: a reader never sees half.
    """

    def __init__(self, root: Path, *, memory_items: int = 2048) -> None:
        self.root = root
        self.memory_items = memory_items
        self._memory: OrderedDict[str, LocalFeatures] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.npz"

    def has(self, sha256: str) -> bool:
        return sha256 in self._memory or self.path(sha256).is_file()

    def get(self, sha256: str) -> LocalFeatures | None:
        """The stored features, None when absent or unreadable (then recomputed by callers)."""
        with self._lock:
            if sha256 in self._memory:
                self._memory.move_to_end(sha256)
                return self._memory[sha256]
        path = self.path(sha256)
        try:
            features = features_from_bytes(path.read_bytes(), path=str(path))
        except (OSError, ValueError):
            return None
        self._remember(sha256, features)
        return features

    def put(self, sha256: str, features: LocalFeatures) -> None:
        """Keep ``features`` (in memory, and on disk when it can be written: the store is a
        cache, so a full or read-only disk is logged, never raised to the search)."""
        path = self.path(sha256)
        self._remember(sha256, features)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(features_bytes(features))
            os.replace(temp, path)
        except OSError as exc:
            logger.warning("Local features of %s not stored: %s", sha256, exc)
            temp.unlink(missing_ok=True)

    def _remember(self, sha256: str, features: LocalFeatures) -> None:
        with self._lock:
            self._memory[sha256] = features
            self._memory.move_to_end(sha256)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)
