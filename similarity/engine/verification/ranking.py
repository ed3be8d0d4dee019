"""Gated re-ranking of a global short list by verification evidence, and the verdict.

Verified candidates (at least ``gate_inliers`` inliers) go first, most inliers first;
everything else keeps the global order, so where verification has nothing to say (loose
produce: no texture to match) the ranking is the global one, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lookalike_core.match_report import NEW, SAME, SIMILAR
from lookalike_core.match_report import verdict_for as distance_verdict

from similarity.engine.verification.geometry import PairEvidence

# Defaults measured on realphotos/grocery with efficientnet-lite0, 65 products in the
# catalog and 16 held out (docs/benchmarks.md, "Verification"); round numbers, chosen for
# phone photos of shop shelves rather than fitted to this set.
# Global candidates verified per photo: 20 against 10 raised hit@5 0.772 -> 0.785; 30
# added nothing (same recall 0.29 both) at 1.5x the time.
SHORT_LIST = 20
GATE_INLIERS = 15  # verified-first from here: 15 gave hit@1 0.50, 20 gave 0.47, 25 0.45
SAME_MIN_INLIERS = 8  # `same` needs this many inliers ...
SAME_MIN_COVERAGE = 0.02  # ... spread over >= 2% of the catalog image (a logo is not a box)
SAME_NEEDS_CENTRE = True  # ... the catalog image covering the photo's centre ...
SAME_MIN_MARGIN = 1.2  # ... and 20% more inliers than the runner-up (brand siblings share logos)


@dataclass(frozen=True)
class VerifyPolicy:
    """The thresholds of re-ranking and of the `same` verdict."""

    short_list: int = SHORT_LIST
    gate_inliers: int = GATE_INLIERS
    same_min_inliers: int = SAME_MIN_INLIERS
    same_min_coverage: float = SAME_MIN_COVERAGE
    same_needs_centre: bool = SAME_NEEDS_CENTRE
    same_min_margin: float = SAME_MIN_MARGIN

    def verified(self, evidence: PairEvidence | None) -> bool:
        return evidence is not None and evidence.inliers >= self.gate_inliers

    def same(self, evidence: PairEvidence | None, *, runner_up: int = 0) -> bool:
        """``evidence`` shows this article (``runner_up``: the most inliers another
        candidate of the short list had)."""
        return (evidence is not None and evidence.inliers >= self.same_min_inliers
                and evidence.coverage >= self.same_min_coverage
                and (evidence.centred or not self.same_needs_centre)
                and evidence.inliers >= self.same_min_margin * runner_up)


def gated_order(evidence: Sequence[PairEvidence | None], *, policy: VerifyPolicy) -> list[int]:
    """Positions of the global short list in their new order: verified first by evidence
    (inliers, then inlier ratio; ties keep the global order), then the rest as they were."""
    verified = [rank for rank, found in enumerate(evidence) if policy.verified(found)]
    verified.sort(key=lambda rank: _strength(evidence[rank]), reverse=True)
    chosen = set(verified)
    return verified + [rank for rank in range(len(evidence)) if rank not in chosen]


def runner_up_inliers(evidence: Sequence[PairEvidence | None], best: int) -> int:
    """The most inliers among the candidates other than position ``best``."""
    return max((found.inliers for rank, found in enumerate(evidence)
                if rank != best and found is not None), default=0)


def _strength(evidence: PairEvidence | None) -> tuple[int, float]:
    return (0, 0.0) if evidence is None else (evidence.inliers, evidence.inlier_ratio)


def verdict_for(
    *,
    distance: float | None,
    evidence: PairEvidence | None,
    runner_up: int = 0,
    duplicate_threshold: float,
    similar_threshold: float,
    policy: VerifyPolicy,
) -> str:
    """The verdict on the first candidate after re-ranking.

    ``same``: verified as this article (``policy.same``; ``runner_up``: the most inliers of
    the other candidates), or a near-identical photo (global distance at or under the
    duplicate threshold: a resized or recompressed copy, which need not verify, e.g. a
    mirrored one). ``similar``: globally close (similar threshold), unverified. ``new``:
    neither. A candidate verified past the gate but short of ``same`` is ranked first and
    shows its evidence, but does not make the photo ``similar``: on the grocery photos
    those were mostly other variants of a brand (held-out products judged ``new`` fell from
    0.92 to 0.88 when they counted).
    """
    if distance is None:
        return NEW
    # The distances' rule is the core's (the light client's verdicts without verification).
    by_distance = distance_verdict(distance, same_threshold=duplicate_threshold,
                                   similar_threshold=similar_threshold)
    if by_distance == SAME or policy.same(evidence, runner_up=runner_up):
        return SAME
    if by_distance == SIMILAR:
        return SIMILAR
    return NEW
