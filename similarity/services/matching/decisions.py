"""Buyers' decisions on a match run's photos: "this is article X", "new", "skipped", undo,
and every ``same`` verdict confirmed at once. One row per (run, supplier_ref), kept in the
database, so decisions outlive re-published reports and retried runs."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from lookalike_core.match_report import SAME

from catalog.models import Article
from catalog.selectors import article_id_storable
from similarity.errors import InvalidDecision
from similarity.models import MatchDecision, MatchRun
from similarity.selectors.matching import match_run_row, match_run_same_pending

MSG_BAD_DECISION = "decision must be one of {choices}; got {value!r}"
MSG_UNKNOWN_REF = "match run #{run} has no supplier photo {ref!r}"
MSG_UNKNOWN_ARTICLE = "no catalog article has the id {article_id!r}"
MSG_ARTICLE_NEEDED = "confirming {ref!r} needs the article it is (article_id)"
MSG_ARTICLE_NOT_WANTED = "a {decision!r} decision names no article; got {article_id!r}"
MSG_NOTHING_TO_UNDO = "supplier photo {ref!r} of match run #{run} has no decision to undo"


def match_decision_record(
    *, run: MatchRun, supplier_ref: str, decision: str, article_id: str = "",
    decided_by: str = "",
) -> MatchDecision:
    """Record a buyer's decision on the photo ``supplier_ref`` of ``run``; re-deciding a photo
    replaces its decision. ``confirmed`` needs ``article_id``, a catalog article (any of them:
    usually one of the photo's candidates); ``new`` and ``skipped`` name none.

    Raises InvalidDecision naming the unknown photo, the unknown article or the bad choice.
    """
    article_id = article_id.strip()
    if decision not in MatchDecision.Decision.values:
        raise InvalidDecision(MSG_BAD_DECISION.format(
            choices=", ".join(MatchDecision.Decision.values), value=decision))
    if decision == MatchDecision.Decision.CONFIRMED:
        if not article_id:
            raise InvalidDecision(MSG_ARTICLE_NEEDED.format(ref=supplier_ref))
        if not (article_id_storable(article_id)
                and Article.objects.filter(article_id=article_id).exists()):
            raise InvalidDecision(MSG_UNKNOWN_ARTICLE.format(article_id=article_id))
    elif article_id:
        raise InvalidDecision(MSG_ARTICLE_NOT_WANTED.format(decision=decision,
                                                            article_id=article_id))
    row = match_run_row(run=run, supplier_ref=supplier_ref)
    if row is None:
        raise InvalidDecision(MSG_UNKNOWN_REF.format(run=run.pk, ref=supplier_ref))
    made, _ = MatchDecision.objects.update_or_create(
        run=run, supplier_ref=supplier_ref,
        defaults={"decision": decision, "article_id": article_id, "verdict": row.verdict,
                  "decided_by": decided_by},
    )
    return made


def match_decision_undo(*, run: MatchRun, supplier_ref: str) -> None:
    """Forget the decision on ``supplier_ref``: the photo is undecided again."""
    deleted = 0
    if "\x00" not in supplier_ref:  # no decision has one (PostgreSQL refuses it in a query)
        deleted, _ = MatchDecision.objects.filter(run=run, supplier_ref=supplier_ref).delete()
    if not deleted:
        raise InvalidDecision(MSG_NOTHING_TO_UNDO.format(ref=supplier_ref, run=run.pk))


@dataclass(frozen=True)
class SameConfirmation:
    """What confirming a run's ``same`` verdicts does (or did): photos confirmed as their
    first match, and ``same`` photos left alone because a buyer already decided them."""

    confirmed: int
    already_decided: int


def match_same_confirm(*, run: MatchRun, decided_by: str = "") -> SameConfirmation:
    """Confirm every undecided ``same`` photo of ``run`` as its first match, in one
    transaction; decisions buyers already made are kept."""
    pending, already = match_run_same_pending(run=run)
    with transaction.atomic():
        taken = set(MatchDecision.objects.filter(run=run).values_list("supplier_ref", flat=True))
        rows = [MatchDecision(run=run, supplier_ref=ref, article_id=article_id,
                              decision=MatchDecision.Decision.CONFIRMED, verdict=SAME,
                              decided_by=decided_by)
                for ref, article_id in pending if ref not in taken]
        # A buyer deciding one of them meanwhile keeps their decision.
        MatchDecision.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return SameConfirmation(confirmed=len(rows), already_decided=already + len(pending)
                            - len(rows))
