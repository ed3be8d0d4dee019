"""Duplicates (reads): Faiss range search -> pairs -> greedy star groups, less what reviewers
decided; one article's duplicates. Decisions are written by ``services.duplicates``.

Groups are cliques of the threshold graph (``similarity.engine.index.star_groups``): no
group holds two articles farther apart than the threshold. Single linkage (connected
components) chained look-alikes into one group (611 lamps of different colours on a 5k
catalog); a star around the best-connected article, whose members are also close to each
other, cannot chain.
"""

from __future__ import annotations

import heapq
import threading
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import faiss
import numpy as np
from django.db.models import Q

from catalog.models import Article, ArticlePk
from catalog.selectors import ID_CHUNK, id_chunks
from similarity.conf import similarity_settings
from similarity.engine.index import StarGroup, range_query, range_search_batched, star_groups
from similarity.errors import InvalidQuery
from similarity.models import DuplicateDecision
from similarity.selectors.search import article_query
from similarity.selectors.store import LoadedIndex, get_store
from similarity.selectors.vectors import vector_batches

# Above this a "duplicate" is just "similar" and the pair count grows towards N^2; use
# export_neighbors for similar items.
MAX_THRESHOLD = 0.25
QUERY_CHUNK = 8192  # query vectors held in memory at a time
# Collection stops past max(PAIRS_PER_VECTOR x N, MIN_PAIR_CAP) pairs (N = indexed vectors):
# duplicates are rare, so that many pairs means the threshold is catching similar items.
PAIRS_PER_VECTOR = 50
MIN_PAIR_CAP = 100_000
PAIRS_LISTED = 50  # closest pairs listed per group; pair_count has the real number
CACHED_THRESHOLDS = 4  # (build, threshold) pair lists kept per process
MSG_BAD_THRESHOLD = "threshold must be a number in (0, {max}]; got {value!r}"
MSG_TOO_MANY_PAIRS = (
    "more than {cap} pairs of the {count} indexed articles are closer than {threshold}: that "
    "is similar items, not duplicates; lower the threshold (near-identical photos are "
    "typically below 0.05)"
)


class TooManyPairs(InvalidQuery):
    """The threshold lets through more pairs than duplicate review can use (400 in the API)."""

    code = "too_many_pairs"

    def __init__(self, *, threshold: float, cap: int, count: int) -> None:
        super().__init__(MSG_TOO_MANY_PAIRS.format(cap=cap, count=count, threshold=threshold))
        self.threshold = threshold
        self.cap = cap
        self.count = count


def pair_cap(vector_count: int) -> int:
    """The most pairs collected for an index of ``vector_count`` vectors."""
    return max(PAIRS_PER_VECTOR * vector_count, MIN_PAIR_CAP)


def validate_threshold(value: object) -> float:
    """A cosine-distance threshold in (0, MAX_THRESHOLD]; InvalidQuery with the value otherwise."""
    if value is None or isinstance(value, bool):
        raise InvalidQuery(MSG_BAD_THRESHOLD.format(max=MAX_THRESHOLD, value=value))
    try:
        threshold = float(str(value).strip())
    except ValueError:
        raise InvalidQuery(MSG_BAD_THRESHOLD.format(max=MAX_THRESHOLD, value=value)) from None
    if not 0 < threshold <= MAX_THRESHOLD:  # also rejects NaN
        raise InvalidQuery(MSG_BAD_THRESHOLD.format(max=MAX_THRESHOLD, value=value))
    return threshold


def pair_key(first: str, second: str) -> tuple[str, str]:
    """The stored order of a pair of shop ids."""
    return (first, second) if first < second else (second, first)


def duplicate_pairs(
    index: faiss.Index, batches: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float
) -> Iterator[tuple[int, int, float]]:
    """(id, id, distance) for every stored pair closer than ``threshold``, each pair once.

    Range search a chunk of query vectors at a time: memory is one chunk plus the pairs
    found, never an N x N matrix.
    """
    for ids, vectors in batches:
        yield from range_search_batched(index, vectors, ids, threshold)


@dataclass(frozen=True)
class GroupMember:
    pk: int
    article_id: str
    title: str
    category: str
    image: str  # storage name ("" when none)
    image_url: str


@dataclass(frozen=True)
class DuplicatePair:
    first: str  # shop ids
    second: str
    distance: float


@dataclass
class DuplicateGroup:
    members: list[GroupMember]  # by shop id
    pairs: list[DuplicatePair]  # the PAIRS_LISTED closest, closest first
    pair_count: int = 0  # all of the group's pairs (every pair of members: a clique)
    max_distance: float = 0.0  # over all of them
    representative: str = ""  # shop id of the member the group was built around

    @property
    def article_ids(self) -> list[str]:
        return [member.article_id for member in self.members]


@dataclass
class DuplicateReport:
    build_name: str
    model: str
    threshold: float
    pair_count: int
    groups: list[DuplicateGroup] = field(default_factory=list)
    hidden_pairs: int = 0  # pairs a reviewer decided on


@dataclass(frozen=True)
class PairList:
    """Pairs as parallel arrays: ~20 bytes a pair instead of a ~100-byte Python tuple."""

    first: np.ndarray  # int64 pks, first < second
    second: np.ndarray
    distance: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.first)

    def __iter__(self) -> Iterator[tuple[int, int, float]]:
        return zip(self.first.tolist(), self.second.tolist(), self.distance.tolist(), strict=True)


# Insertion order = least recently used first. A TooManyPairs is cached too, so repeating a
# too-wide threshold costs nothing.
_pairs_cache: dict[tuple[str, float], PairList | TooManyPairs] = {}
_pairs_lock = threading.Lock()


def collect_pairs(loaded: LoadedIndex, threshold: float) -> PairList:
    """This build's pairs under ``threshold``; TooManyPairs as soon as they pass pair_cap."""
    count = len(loaded.ids)
    cap = pair_cap(count)
    first, second, distance = array("q"), array("q"), array("d")
    batches = vector_batches(loaded.manifest.model_identity, loaded.ids, QUERY_CHUNK)
    for a, b, d in duplicate_pairs(loaded.index, batches, threshold):
        if len(first) >= cap:
            raise TooManyPairs(threshold=threshold, cap=cap, count=count)
        first.append(a)
        second.append(b)
        distance.append(d)
    return PairList(
        np.frombuffer(first, dtype=np.int64), np.frombuffer(second, dtype=np.int64),
        np.frombuffer(distance, dtype=np.float64),
    )


def _cached_pairs(loaded: LoadedIndex, threshold: float) -> PairList:
    """Pairs computed once per process per (build, threshold); builds are immutable.

    The CACHED_THRESHOLDS most recently used thresholds are kept, so a reviewer switching
    between a few thresholds (or two admins on different ones) does not recompute each time.
    """
    key = (loaded.name, threshold)
    with _pairs_lock:
        pairs = _pairs_cache.pop(key, None)
        if pairs is None:
            try:
                pairs = collect_pairs(loaded, threshold)
            except TooManyPairs as exc:
                pairs = exc
        _pairs_cache[key] = pairs  # (re)inserted last: most recently used
        while len(_pairs_cache) > CACHED_THRESHOLDS:
            del _pairs_cache[next(iter(_pairs_cache))]
    if isinstance(pairs, TooManyPairs):
        raise TooManyPairs(threshold=threshold, cap=pairs.cap, count=pairs.count)
    return pairs


def duplicate_groups_find(
    *, threshold: float | str | None = None, include_reviewed: bool = False
) -> DuplicateReport:
    """Groups of near-identical articles in the current index, largest first.

    A pair a reviewer marked "not duplicates" is no edge; a group whose every pair has been
    decided is hidden unless ``include_reviewed``. Decisions are keyed by shop ids, so they
    hold across rebuilds and re-imports.
    """
    loaded = get_store().get()
    threshold = _threshold(loaded, threshold)
    pairs = _cached_pairs(loaded, threshold)
    articles = _active_articles(pairs)
    decisions = _decisions({article.article_id for article in articles.values()})
    edges, hidden = _edges(pairs, articles, decisions)
    report = DuplicateReport(
        build_name=loaded.name, model=loaded.manifest.model, threshold=threshold,
        pair_count=len(edges), hidden_pairs=hidden,
    )
    for star, star_edges in _stars(edges):
        names = {pk: articles[pk].article_id for pk in star.members}
        keys = [(pair_key(names[a], names[b]), round(d, 6)) for a, b, d in star_edges]
        if not include_reviewed and all(key in decisions for key, _ in keys):
            report.hidden_pairs += len(keys)  # every pair decided: nothing left to review
            continue
        report.groups.append(_group(star, keys, articles))
    return report


def _threshold(loaded: LoadedIndex, threshold: float | str | None) -> float:
    """The threshold asked for, else the model family's; InvalidQuery when out of range."""
    if threshold is None:
        threshold = similarity_settings().duplicate_threshold_for(loaded.manifest.model)
    return validate_threshold(threshold)


def _active_articles(pairs: PairList) -> dict[ArticlePk, Article]:
    """The active articles among the pairs' members (one `pk__in` a chunk: SQLite's limit)."""
    pks = np.unique(np.concatenate((pairs.first, pairs.second))).tolist()
    articles: dict[ArticlePk, Article] = {}
    for chunk in id_chunks(pks):
        articles.update(
            Article.objects.filter(pk__in=chunk, is_active=True)
            .only("pk", "article_id", "title", "category", "image", "image_url")
            .in_bulk()
        )
    return articles


def _edges(
    pairs: PairList, articles: dict[ArticlePk, Article], decisions: dict[tuple[str, str], str]
) -> tuple[PairList, int]:
    """The pairs between active articles that no reviewer marked "not duplicates", and how
    many were so marked."""
    first, second, distance = array("q"), array("q"), array("d")
    hidden = 0
    for a, b, d in pairs:
        if a not in articles or b not in articles:
            continue
        verdict = decisions.get(pair_key(articles[a].article_id, articles[b].article_id))
        if verdict == DuplicateDecision.Verdict.NOT_DUPLICATE:
            hidden += 1
            continue
        first.append(a)
        second.append(b)
        distance.append(d)
    edges = PairList(
        np.frombuffer(first, dtype=np.int64), np.frombuffer(second, dtype=np.int64),
        np.frombuffer(distance, dtype=np.float64),
    )
    return edges, hidden


def _stars(edges: PairList) -> list[tuple[StarGroup, list[tuple[int, int, float]]]]:
    """Star groups of the edges, each with its own edges (pairs across groups belong to
    neither)."""
    stars = star_groups(edges.first, edges.second, edges.distance)
    group_of = {pk: n for n, star in enumerate(stars) for pk in star.members}
    edges_of: list[list[tuple[int, int, float]]] = [[] for _ in stars]
    for a, b, d in edges:
        n = group_of.get(a)
        if n is not None and n == group_of.get(b):
            edges_of[n].append((a, b, d))
    return list(zip(stars, edges_of, strict=True))


def _group(
    star: StarGroup, keys: list[tuple[tuple[str, str], float]], articles: dict[int, Article]
) -> DuplicateGroup:
    members = sorted((group_member(articles[pk]) for pk in star.members),
                     key=lambda member: member.article_id)
    closest = heapq.nsmallest(PAIRS_LISTED, keys, key=lambda item: (item[1], item[0]))
    return DuplicateGroup(
        members=members,
        pairs=[DuplicatePair(one, other, d) for (one, other), d in closest],
        pair_count=len(keys),
        max_distance=max(d for _, d in keys),
        representative=articles[star.representative].article_id,
    )


def group_member(article: Article) -> GroupMember:
    return GroupMember(
        pk=article.pk, article_id=article.article_id, title=article.title,
        category=article.category, image=article.image.name or "", image_url=article.image_url,
    )


def _decisions(article_ids: set[str]) -> dict[tuple[str, str], str]:
    """Stored verdicts on pairs of ``article_ids``, looked up in chunks of ID_CHUNK ids."""
    ordered = sorted(article_ids)
    decisions: dict[tuple[str, str], str] = {}
    for start in range(0, len(ordered), ID_CHUNK):
        rows = DuplicateDecision.objects.filter(
            article_a__in=ordered[start : start + ID_CHUNK]
        ).values_list("article_a", "article_b", "verdict")
        decisions.update({(a, b): verdict for a, b, verdict in rows if b in article_ids})
    return decisions


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
    threshold = _threshold(loaded, threshold)
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
