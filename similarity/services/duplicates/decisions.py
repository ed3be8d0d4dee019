"""Acting on duplicates: one article's duplicates; keep one (deactivating the others,
reversibly), undo that, or split an article off its group."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Article
from similarity.conf import similarity_settings
from similarity.engine.index import range_query
from similarity.errors import InvalidQuery
from similarity.models import DuplicateDecision
from similarity.selectors.search import article_query
from similarity.selectors.store import get_store
from similarity.services.duplicates.groups import (
    GroupMember,
    duplicate_decision_record,
    group_member,
    pair_key,
    validate_threshold,
)

MSG_SPLIT_ALONE = "article {article_id!r} must be split from at least one other article"
MSG_NOTHING_TO_UNDO = "no 'keep {kept}' decision to undo"


@dataclass(frozen=True)
class ArticleDuplicate:
    member: GroupMember
    distance: float  # cosine distance to the article
    kept: str = ""  # shop id kept by a "duplicate" decision on the pair, if any


@dataclass
class ArticleDuplicates:
    """The articles within the duplicate threshold of one article, nearest first."""

    article_id: str
    model: str
    index_build: str
    threshold: float
    duplicates: list[ArticleDuplicate] = field(default_factory=list)
    not_duplicates: int = 0  # within the threshold but marked "not duplicates" (left out)
    deactivated: list[str] = field(default_factory=list)  # kept over these, which it deactivated


def article_duplicates_find(
    *, article_id: str, threshold: float | str | None = None
) -> ArticleDuplicates:
    """Active articles closer than the threshold to ``article_id`` (strict ``<``, as groups).

    Pairs a reviewer marked "not duplicates" are left out (counted); "duplicate" decisions
    are shown with the article kept. ArticleNotFound / ArticleNotIndexed as for searches.
    """
    loaded = get_store().get()
    if threshold is None:
        threshold = similarity_settings().duplicate_threshold_for(loaded.manifest.model)
    threshold = validate_threshold(threshold)
    query = article_query(loaded, article_id)
    found = range_query(loaded.index, query.vector, threshold)
    distance_of = {int(pk): float(d) for pk, d in zip(found.ids, found.distances, strict=True)
                   if int(pk) != query.pk}
    articles = Article.objects.filter(pk__in=list(distance_of), is_active=True).only(
        "pk", "article_id", "title", "category", "image", "image_url")
    members = sorted((group_member(a) for a in articles),
                     key=lambda m: (distance_of[m.pk], m.article_id))
    own = query.article_id
    decided = {
        pair_key(a, b): (verdict, kept, done)
        for a, b, verdict, kept, done in DuplicateDecision.objects.filter(
            Q(article_a=own) | Q(article_b=own)
        ).values_list("article_a", "article_b", "verdict", "kept", "deactivated")
    }
    result = ArticleDuplicates(
        article_id=own, model=loaded.manifest.model, index_build=loaded.name,
        threshold=threshold,
        deactivated=sorted(
            b if a == own else a
            for (a, b), (verdict, kept, done) in decided.items() if done and kept == own
        ),
    )
    for member in members:
        verdict, kept, _ = decided.get(pair_key(own, member.article_id), ("", "", False))
        if verdict == DuplicateDecision.Verdict.NOT_DUPLICATE:
            result.not_duplicates += 1
            continue
        result.duplicates.append(ArticleDuplicate(member, distance_of[member.pk], kept))
    return result


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
