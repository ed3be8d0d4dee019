"""Reviewers' duplicate decisions: a verdict on a group, keep one (deactivating the others,
reversibly), undo that, or split an article off its group. Keyed by shop ids, one row per
pair (``selectors.duplicates.pair_key`` orders it), so decisions survive rebuilds."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from catalog.models import Article
from similarity.errors import InvalidQuery
from similarity.models import DuplicateDecision
from similarity.selectors.duplicates import pair_key

MSG_BAD_VERDICT = "verdict must be one of {choices}; got {value!r}"
MSG_TOO_FEW = "a decision needs at least two articles; got {count}"
MSG_KEPT_NOT_IN_GROUP = "kept article {kept!r} is not one of the group's articles"
MSG_SPLIT_ALONE = "article {article_id!r} must be split from at least one other article"
MSG_NOTHING_TO_UNDO = "no 'keep {kept}' decision to undo"


def duplicate_decision_record(
    *, article_ids: list[str], verdict: str, kept: str = "", decided_by: str = ""
) -> int:
    """Store a reviewer's verdict on a group: one decision per pair of its articles.

    ``not_duplicate``: none of them duplicates another. ``duplicate``: they are, ``kept`` is
    the one the shop keeps. Re-deciding a pair overwrites it. Returns the number of pairs.
    """
    ids = sorted(set(article_ids))
    if len(ids) < 2:
        raise InvalidQuery(MSG_TOO_FEW.format(count=len(ids)))
    if verdict not in DuplicateDecision.Verdict.values:
        raise InvalidQuery(
            MSG_BAD_VERDICT.format(choices=", ".join(DuplicateDecision.Verdict.values),
                                   value=verdict)
        )
    if kept and kept not in ids:
        raise InvalidQuery(MSG_KEPT_NOT_IN_GROUP.format(kept=kept))
    count = 0
    with transaction.atomic():
        for position, first in enumerate(ids):
            for second in ids[position + 1 :]:
                DuplicateDecision.objects.update_or_create(
                    article_a=first, article_b=second,
                    defaults={"verdict": verdict, "kept": kept, "decided_by": decided_by},
                )
                count += 1
    return count


@dataclass(frozen=True)
class KeepOutcome:
    pairs: int  # decisions recorded
    deactivated: list[str]  # shop ids deactivated by this decision


def duplicate_keep(
    *, kept: str, article_ids: list[str], deactivate: bool, decided_by: str = ""
) -> KeepOutcome:
    """Record ``kept`` as the one of ``article_ids`` the shop keeps; maybe deactivate the rest.

    Every pair is recorded as "duplicate" with ``kept``. With ``deactivate``, the other
    articles that are active become inactive (out of search at once, out of the index at
    the next build) and the (kept, other) decisions say so, for ``duplicate_keep_undo``.
    """
    ids = sorted(set(article_ids) | {kept})
    with transaction.atomic():
        pairs = duplicate_decision_record(
            article_ids=ids, verdict=DuplicateDecision.Verdict.DUPLICATE, kept=kept,
            decided_by=decided_by,
        )
        deactivated: list[str] = []
        if deactivate:
            others = [article_id for article_id in ids if article_id != kept]
            deactivated = sorted(Article.objects.filter(article_id__in=others, is_active=True)
                                 .values_list("article_id", flat=True))
            Article.objects.filter(article_id__in=deactivated).update(
                is_active=False, updated_at=timezone.now())
            for other in deactivated:
                first, second = pair_key(kept, other)
                DuplicateDecision.objects.filter(article_a=first, article_b=second).update(
                    deactivated=True)
    return KeepOutcome(pairs=pairs, deactivated=deactivated)


@dataclass(frozen=True)
class UndoOutcome:
    decisions: int  # "keep" decisions deleted
    reactivated: list[str]


def duplicate_keep_undo(*, kept: str) -> UndoOutcome:
    """Undo every "keep ``kept``" decision: reactivate what it deactivated, forget the verdicts.

    The group comes back for review; articles another cause deactivated stay inactive.
    """
    with transaction.atomic():
        decisions = DuplicateDecision.objects.select_for_update().filter(
            verdict=DuplicateDecision.Verdict.DUPLICATE, kept=kept)
        rows = list(decisions.values_list("article_a", "article_b", "deactivated"))
        if not rows:
            raise InvalidQuery(MSG_NOTHING_TO_UNDO.format(kept=kept))
        reactivate = sorted(b if a == kept else a for a, b, done in rows if done)
        Article.objects.filter(article_id__in=reactivate).update(
            is_active=True, updated_at=timezone.now())
        count = decisions.delete()[0]
    return UndoOutcome(decisions=count, reactivated=reactivate)


def duplicate_split(*, article_id: str, others: list[str], decided_by: str = "") -> int:
    """Take ``article_id`` out of a group: "not duplicates" with each of ``others``.

    Recorded per pair, keyed by shop ids, so the article stays split after rebuilds;
    the others keep their own pairs. Returns the number of decisions recorded.
    """
    rest = sorted(set(others) - {article_id})
    if not rest:
        raise InvalidQuery(MSG_SPLIT_ALONE.format(article_id=article_id))
    with transaction.atomic():
        return sum(
            duplicate_decision_record(article_ids=[article_id, other],
                                      verdict=DuplicateDecision.Verdict.NOT_DUPLICATE,
                                      decided_by=decided_by)
            for other in rest
        )
