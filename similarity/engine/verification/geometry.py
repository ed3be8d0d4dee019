"""Does a catalog image appear in a photo? Descriptor matching (ratio test) and a homography
fitted with MAGSAC++; the inliers are the evidence.

Measured on realphotos/grocery (docs/benchmarks.md, "Verification"), short list 20: a
homography with MAGSAC++ puts the right packshot first more often than an affine map
(hit@1 0.51 against 0.46: shop photos see boxes in perspective) and than classic RANSAC
(same answers, several times slower on pairs with few inliers).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from similarity.engine.verification.features import WORKING_SIDE, LocalFeatures

RATIO = 0.75  # Lowe's ratio test: 0.8 let in more brand-sibling matches (precision 0.96)
MIN_MATCHES = 8  # fewer ratio-test matches than this: no model is fitted
REPROJECTION_PX = 5.0  # inlier distance at the 640 px working side, scaled to the photo's
MAX_ITERATIONS = 2000
CONFIDENCE = 0.995


@dataclass(frozen=True)
class PairEvidence:
    """What one catalog image / photo pair showed.

    ``inliers``: matches consistent with one homography; ``inlier_ratio``: their share of
    the ratio-test matches; ``coverage``: the area of the inliers' convex hull over the
    catalog image's area (a logo alone covers little of a packshot, the whole box covers
    much); ``centred``: the catalog image, projected into the photo, covers its centre (the
    photo is *of* it, not of a neighbour on the shelf).
    """

    inliers: int = 0
    inlier_ratio: float = 0.0
    coverage: float = 0.0
    centred: bool = False


NOTHING = PairEvidence()


def pair_verify(photo: LocalFeatures, catalog: LocalFeatures, *,
                photo_descriptors: np.ndarray | None = None) -> PairEvidence:
    """The evidence that ``catalog`` appears in ``photo``.

    ``photo_descriptors`` (the photo's RootSIFT, computed once per photo) saves recomputing
    them for every candidate.
    """
    if len(photo) < MIN_MATCHES or len(catalog) < MIN_MATCHES:
        return NOTHING
    query = photo.root_sift() if photo_descriptors is None else photo_descriptors
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(query, catalog.root_sift(), k=2)
    good = [first for first, second in (p for p in pairs if len(p) == 2)
            if first.distance < RATIO * second.distance]
    if len(good) < MIN_MATCHES:
        return NOTHING
    source = catalog.points[[m.trainIdx for m in good]]
    target = photo.points[[m.queryIdx for m in good]]
    tolerance = REPROJECTION_PX * max(photo.size) / WORKING_SIDE
    homography, mask = cv2.findHomography(
        source, target, cv2.USAC_MAGSAC, tolerance, maxIters=MAX_ITERATIONS,
        confidence=CONFIDENCE)
    if homography is None or mask is None:
        return NOTHING
    keep = mask.ravel().astype(bool)
    inliers = int(keep.sum())
    if inliers < 4:
        return NOTHING
    width, height = catalog.size
    hull = cv2.convexHull(source[keep].astype(np.float32))
    return PairEvidence(
        inliers=inliers,
        inlier_ratio=inliers / len(good),
        coverage=float(cv2.contourArea(hull)) / float(width * height),
        centred=_covers_centre(homography, catalog.size, photo.size),
    )


def _covers_centre(homography: np.ndarray, catalog_size: tuple[int, int],
                   photo_size: tuple[int, int]) -> bool:
    """The catalog image's frame, mapped into the photo, is a convex quadrilateral holding
    the photo's centre (a degenerate map, folded or flipped, covers nothing)."""
    width, height = catalog_size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]],
                       dtype=np.float32).reshape(-1, 1, 2)
    try:
        quad = cv2.perspectiveTransform(corners, homography).reshape(-1, 2).astype(np.float32)
    except cv2.error:
        return False
    if not np.isfinite(quad).all() or not cv2.isContourConvex(quad):
        return False
    centre = (photo_size[0] / 2.0, photo_size[1] / 2.0)
    return bool(cv2.pointPolygonTest(quad, centre, False) >= 0)
