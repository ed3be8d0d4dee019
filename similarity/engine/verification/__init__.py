"""Second-stage verification (pure, no Django): is a short-listed catalog image the same
product as the photo? Local features (``features``), a geometric fit (``geometry``), and
gated re-ranking with the verdict (``ranking``)."""

from similarity.engine.verification.features import (
    MAX_KEYPOINTS,
    WORKING_SIDE,
    FeatureStore,
    LocalFeatures,
    extract_features,
    features_bytes,
    features_from_bytes,
)
from similarity.engine.verification.geometry import NOTHING, PairEvidence, pair_verify
from similarity.engine.verification.ranking import (
    VerifyPolicy,
    gated_order,
    runner_up_inliers,
    verdict_for,
)

__all__ = [
    "MAX_KEYPOINTS",
    "NOTHING",
    "WORKING_SIDE",
    "FeatureStore",
    "LocalFeatures",
    "PairEvidence",
    "VerifyPolicy",
    "extract_features",
    "features_bytes",
    "features_from_bytes",
    "gated_order",
    "pair_verify",
    "runner_up_inliers",
    "verdict_for",
]
