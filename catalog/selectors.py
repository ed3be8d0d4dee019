"""Catalog reads: article lists and lookups."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.db.models import QuerySet

from catalog.models import Article, ArticleId, ArticlePk

DOWNLOAD_FAILED = "download failed"
# Ids per `IN` query: SQLite refuses statements with more than 250,000 variables.
ID_CHUNK = 10_000

ARTICLE_LIST_FIELDS = (
    "pk",
    "article_id",
    "title",
    "category",
    "image_url",
    "image",
    "download_status",
    "is_active",
)


def article_list(*, filters: dict[str, object]) -> QuerySet[Article]:
    """Articles in id order, filtered by category, download status and active flag."""
    queryset = Article.objects.only(*ARTICLE_LIST_FIELDS).order_by("article_id")
    if filters.get("category") is not None:
        queryset = queryset.filter(category=filters["category"])
    if filters.get("status"):
        queryset = queryset.filter(download_status=filters["status"])
    if filters.get("is_active") is not None:
        queryset = queryset.filter(is_active=bool(filters["is_active"]))
    return queryset


def public_download_error(*, error: str, user: object) -> str:
    """A download error as a client may read it: the detail for signed-in users only.

    Download errors name hosts, addresses and ports (connection refused, refused private
    address...): shown to anyone, they would turn the downloader into a port scanner. An
    anonymous client reads ``DOWNLOAD_FAILED`` instead; staff and token users see it all.
    """
    if not error:
        return ""
    return error if getattr(user, "is_authenticated", False) else DOWNLOAD_FAILED


def article_id_storable(article_id: str) -> bool:
    """Whether any article can have this id: no NUL (PostgreSQL text refuses it), fits the column.

    Checked before querying, so an id from a URL gives "not found" on every database
    instead of a database error on some.
    """
    max_length = Article._meta.get_field("article_id").max_length or 0
    return "\x00" not in article_id and 0 < len(article_id) <= max_length


def article_get(*, article_id: str) -> Article | None:
    """The article with the shop's ``article_id``, or None (also for ids no article can have)."""
    if not article_id_storable(article_id):
        return None
    return Article.objects.filter(article_id=article_id).first()


def image_source(*, name: str, storage: Storage | None = None) -> str | bytes:
    """What a decoder reads for stored image ``name``: its path when the storage is a local
    directory (no copy), else its bytes, read through the storage (S3...)."""
    storage = storage if storage is not None else default_storage
    if isinstance(storage, FileSystemStorage):
        return storage.path(name)
    with storage.open(name, "rb") as handle:
        data: bytes = handle.read()
    return data


def id_chunks(ids: Iterable[int], size: int | None = None) -> Iterator[list[int]]:
    """``ids`` as lists of at most ``size`` (default ID_CHUNK) ints, for bounded `pk__in`."""
    size = size or ID_CHUNK
    chunk: list[int] = []
    for pk in ids:
        chunk.append(int(pk))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def article_ids_by_pk(
    *, pks: Iterable[ArticlePk], active_only: bool = False
) -> dict[ArticlePk, ArticleId]:
    """pk -> shop id of the articles among ``pks`` (of the active ones with ``active_only``),
    looked up in chunks: one `pk__in` over a large catalog fails on SQLite."""
    articles = Article.objects.filter(is_active=True) if active_only else Article.objects.all()
    names: dict[ArticlePk, ArticleId] = {}
    for chunk in id_chunks(pks):
        names.update(articles.filter(pk__in=chunk).values_list("pk", "article_id"))
    return names


def existing_article_pks(*, pks: Iterable[ArticlePk]) -> set[ArticlePk]:
    """The subset of ``pks`` still in the Article table (hard deletes since a build drop out)."""
    found: set[ArticlePk] = set()
    for chunk in id_chunks(pks):
        found.update(Article.objects.filter(pk__in=chunk).values_list("pk", flat=True))
    return found
