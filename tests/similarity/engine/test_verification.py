"""The verification stage on synthetic pictures: a textured box found in a cluttered,
tilted photo of it; an unrelated photo finds nothing; ranking keeps the global order where
nothing verifies; features stored by content, bounded in memory."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from lookalike_core.match_report import NEW, SAME, SIMILAR

from similarity.engine.verification import (
    NOTHING,
    FeatureStore,
    PairEvidence,
    VerifyPolicy,
    extract_features,
    gated_order,
    pair_verify,
    runner_up_inliers,
    verdict_for,
)
from tests.similarity.verification_pictures import pil, shop_photo, textured


def test_a_tilted_box_in_clutter_verifies_and_covers_the_centre():
    box = textured(1)
    evidence = pair_verify(extract_features(pil(shop_photo(box, 1))), extract_features(pil(box)))
    assert evidence.inliers >= 30 and evidence.inlier_ratio > 0.3
    assert evidence.centred and evidence.coverage > 0.2
    assert VerifyPolicy().same(evidence)


def test_another_box_does_not_verify():
    photo = extract_features(pil(shop_photo(textured(1), 1)))
    evidence = pair_verify(photo, extract_features(pil(textured(2))))
    assert evidence.inliers < 15 and not VerifyPolicy().same(evidence)  # shared glyphs only


def test_featureless_images_give_no_evidence():
    blank = extract_features(pil(np.full((200, 200, 3), 255, np.uint8)))
    assert len(blank) == 0
    assert pair_verify(blank, extract_features(pil(textured(3)))) == NOTHING


def test_large_images_are_reduced_to_the_working_side():
    features = extract_features(pil(cv2.resize(textured(4), (1600, 1200))))
    assert max(features.size) == 640 and len(features) <= 1500


def test_gated_order_puts_verified_first_and_keeps_the_rest_in_global_order():
    policy = VerifyPolicy(gate_inliers=15)
    evidence = [None, PairEvidence(3), PairEvidence(40), None, PairEvidence(20, 0.9)]
    assert gated_order(evidence, policy=policy) == [2, 4, 0, 1, 3]
    assert gated_order([None, PairEvidence(5)], policy=policy) == [0, 1]
    assert runner_up_inliers(evidence, 2) == 20


@pytest.mark.parametrize(
    ("distance", "evidence", "runner_up", "expected"),
    [
        (0.5, PairEvidence(40, 0.6, 0.3, True), 0, SAME),
        (0.5, PairEvidence(40, 0.6, 0.3, False), 0, NEW),  # a neighbour on the shelf
        (0.5, PairEvidence(40, 0.6, 0.005, True), 0, NEW),  # a logo, not the box
        (0.5, PairEvidence(40, 0.6, 0.3, True), 38, NEW),  # a sibling verifies as well
        (0.01, None, 0, SAME),  # a near-identical copy needs no verification
        (0.2, None, 0, SIMILAR),
        (None, None, 0, NEW),
    ],
)
def test_verdicts(distance, evidence, runner_up, expected):
    assert verdict_for(distance=distance, evidence=evidence, runner_up=runner_up,
                       duplicate_threshold=0.05, similar_threshold=0.25,
                       policy=VerifyPolicy()) == expected


def test_feature_store_round_trips_by_content_and_bounds_memory(tmp_path):
    store = FeatureStore(tmp_path, memory_items=2)
    features = extract_features(pil(textured(5)))
    shas = [f"{n:064x}" for n in range(3)]
    for sha in shas:
        store.put(sha, features)
    assert len(store._memory) == 2
    fresh = FeatureStore(tmp_path)
    back = fresh.get(shas[0])
    assert back is not None and np.array_equal(back.descriptors, features.descriptors)
    assert back.size == features.size
    store.path(shas[1]).write_bytes(b"not features")
    assert FeatureStore(tmp_path).get(shas[1]) is None
    with pytest.raises(ValueError, match="SHA-256"):
        store.path("../etc")
