"""Catalog import: an idempotent upsert of articles from a feed (``catalog.feeds``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from lookalike_core.tabular import Record, TabularError

from catalog.feeds import FeedError, feed_open
from catalog.models import (
    URL_NOT_URI,
    Article,
    ArticleImage,
    article_id_problem,
    http_url_validator,
)
from catalog.services.images import ImageFiles

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("article_id", "image_url")
ADDITIONAL_IMAGES_COLUMN = "additional_image_urls"
KNOWN_COLUMNS = (
    "article_id", "image_url", "title", "category", ADDITIONAL_IMAGES_COLUMN, "item_group_id",
    "availability",
)
# Google Merchant Center's limit for additional_image_link; more are dropped with a warning.
MAX_ADDITIONAL_IMAGES = 10
# Between additional image URLs: whitespace or "|" (neither can be in a valid URL), or a
# comma followed by the next URL (Google's comma-separated lists; commas inside URLs stay).
_URL_SEPARATOR = re.compile(r"[\s|]+|,\s*(?=https?://)", re.IGNORECASE)
CHUNK_SIZE = 2000
MAX_ID_LENGTH: int = Article._meta.get_field("article_id").max_length or 255
MAX_URL_LENGTH: int = Article._meta.get_field("image_url").max_length or 2048

MSG_MISSING_ID = "missing article_id"
MSG_MISSING_URL = "missing image_url"
MSG_ID_TYPE = "article_id must be a string or a number; got {kind}"
MSG_BAD_URL = "invalid image_url {url!r}: only absolute http(s) URLs are accepted"
MSG_BAD_URL_DETAIL = "invalid image_url {url!r}: {detail}"
MSG_DUPLICATE = "duplicate article_id {article_id!r} (first seen on line {first_line})"
MSG_NUL = "contains a NUL character (in {field!r})"
MSG_EXTRA_DROPPED = "additional image {position} dropped: {reason}"
MSG_TOO_MANY_IMAGES = (
    "{count} additional images; the first {limit} are kept (MAX_ADDITIONAL_IMAGES)"
)
MSG_SURROGATE = "contains an unpaired surrogate like \\ud800, which is not text (in {field!r})"

_VALUE_FIELDS = ("title", "category", "item_group_id", "availability", "metadata")
_UPDATE_FIELDS = [*_VALUE_FIELDS, "is_active", "updated_at"]
_URL_CHANGE_FIELDS = [
    *_UPDATE_FIELDS, "image_url", "download_status", "download_error", "download_attempts",
]


class CatalogImportError(Exception):
    """The file as a whole cannot be imported (missing, unreadable, wrong format, no header)."""


@dataclass
class SkippedRow:
    line: int
    reason: str


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    image_changed: int = 0
    images_changed: int = 0  # articles whose additional images changed (queued for download)
    skipped: list[SkippedRow] = field(default_factory=list)
    # Rows imported with something left out (a bad additional image URL): line and reason.
    warnings: list[SkippedRow] = field(default_factory=list)
    dry_run: bool = False
    format: str = ""  # the feed's format (catalog.feeds)

    def describe(self) -> str:
        text = (
            f"{self.created} new, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped"
        )
        if self.image_changed:
            text += f" ({self.image_changed} with a new image URL, queued for download)"
        if self.images_changed:
            text += f" ({self.images_changed} with changed additional images)"
        if self.warnings:
            text += f", {len(self.warnings)} warnings"
        if self.deactivated:
            text += f", {self.deactivated} deactivated (not in the file)"
        if self.dry_run:
            text += " [dry run: nothing written]"
        return text


@dataclass(frozen=True)
class _Row:
    line: int
    article_id: str
    image_url: str
    title: str
    category: str
    metadata: dict[str, Any]
    additional_urls: tuple[str, ...] = ()
    item_group_id: str = ""
    availability: str = ""
    warnings: tuple[str, ...] = ()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _records(
    path: Path, format: str | None, summary: ImportSummary
) -> Iterator[tuple[int, Record]]:
    try:
        feed = feed_open(path, format=format)
        summary.format = feed.format
        yield from feed.records
    except (FeedError, TabularError) as exc:
        raise CatalogImportError(str(exc)) from exc


def _has_nul(value: Any) -> bool:
    """A NUL character anywhere in ``value`` (nested keys and values too)."""
    return _any_string(value, lambda text: "\x00" in text)


def _has_surrogate(value: Any) -> bool:
    """A lone surrogate anywhere in ``value``: JSON's "\\ud800" escape makes one; no database
    encoding (UTF-8) can store it."""
    return _any_string(value, lambda text: _SURROGATES.search(text) is not None)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _any_string(value: Any, test: Callable[[str], bool]) -> bool:
    if isinstance(value, str):
        return test(value)
    if isinstance(value, dict):
        return any(_any_string(key, test) or _any_string(item, test) for key, item in value.items())
    if isinstance(value, list):
        return any(_any_string(item, test) for item in value)
    return False


def _parse(line: int, record: dict[str, Any]) -> _Row | str:
    """The row as an article's values, or why it is skipped."""
    raw_id = record.get("article_id")
    if raw_id is not None and (isinstance(raw_id, bool)
                               or not isinstance(raw_id, str | int | float)):
        return MSG_ID_TYPE.format(kind=type(raw_id).__name__)
    article_id = _text(raw_id)
    image_url = _text(record.get("image_url"))
    problem = article_text_problem(record) or article_id_refusal(article_id) or _url_problem(
        image_url)
    if problem:
        return problem
    metadata = {
        key: value
        for key, value in record.items()
        if key not in KNOWN_COLUMNS and value not in (None, "")
    }
    additional_urls, warnings = _additional_urls(record.get(ADDITIONAL_IMAGES_COLUMN), image_url)
    return _Row(
        line=line,
        article_id=article_id,
        image_url=image_url,
        title=_text(record.get("title"))[:1000],
        category=_text(record.get("category"))[:255],
        metadata=metadata,
        additional_urls=additional_urls,
        item_group_id=_text(record.get("item_group_id"))[:255],
        availability=_text(record.get("availability")).lower().replace("_", " ")[:32],
        warnings=warnings,
    )


def _additional_urls(value: Any, primary: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The valid additional image URLs of a row, in order, without repeats or the primary
    image, and a warning for each one dropped. JSON Lines may give a list; CSV a text."""
    if value is None or value == "":
        return (), ()
    items = value if isinstance(value, list) else _URL_SEPARATOR.split(_text(value))
    urls: list[str] = []
    warnings: list[str] = []
    for position, item in enumerate((_text(item) for item in items if _text(item)), start=1):
        problem = _url_problem(item)
        if problem:
            warnings.append(MSG_EXTRA_DROPPED.format(position=position, reason=problem))
        elif item != primary and item not in urls:
            urls.append(item)
    if len(urls) > MAX_ADDITIONAL_IMAGES:
        warnings.append(MSG_TOO_MANY_IMAGES.format(count=len(urls), limit=MAX_ADDITIONAL_IMAGES))
        urls = urls[:MAX_ADDITIONAL_IMAGES]
    return tuple(urls), tuple(warnings)


def article_text_problem(record: dict[str, Any]) -> str | None:
    """Why a value of ``record`` (keys and nested values too) cannot be stored, or None.

    SQLite stores NUL; PostgreSQL rejects it (text and jsonb) and would abort the import.
    Lone surrogates (JSON escapes, file names that are not UTF-8) no encoding can store.
    Shared by every importer (feeds, folders).
    """
    for key, value in record.items():
        if _has_nul(key) or _has_nul(value):
            return MSG_NUL.format(field=key)
        if _has_surrogate(key) or _has_surrogate(value):
            return MSG_SURROGATE.format(field=key)
    return None


def article_id_refusal(article_id: str) -> str | None:
    """Why an importer refuses ``article_id``, or None: missing, too long, or unusable in API
    URLs (``article_id_problem``). Shared by every importer (feeds, folders)."""
    if not article_id:
        return MSG_MISSING_ID
    if len(article_id) > MAX_ID_LENGTH:
        return f"article_id longer than {MAX_ID_LENGTH} characters"
    return article_id_problem(article_id)


def _url_problem(image_url: str) -> str | None:
    if not image_url:
        return MSG_MISSING_URL
    try:
        if len(image_url) > MAX_URL_LENGTH:
            raise ValidationError("too long")
        http_url_validator(image_url)
    except ValidationError as exc:
        if exc.code == URL_NOT_URI:
            return MSG_BAD_URL_DETAIL.format(url=image_url[:200], detail=exc.message)
        return MSG_BAD_URL.format(url=image_url[:200])
    return None


def _apply_chunk(rows: list[_Row], summary: ImportSummary, *, dry_run: bool) -> None:
    existing = Article.objects.in_bulk([row.article_id for row in rows], field_name="article_id")
    stored_urls = _stored_additional_urls([article.pk for article in existing.values()])
    now = timezone.now()
    to_create: list[Article] = []
    to_update: list[Article] = []
    to_update_with_url: list[Article] = []
    for row in rows:
        article = existing.get(row.article_id)
        if article is None:
            to_create.append(
                Article(
                    article_id=row.article_id,
                    image_url=row.image_url,
                    **{name: getattr(row, name) for name in _VALUE_FIELDS},
                )
            )
            continue
        changed = stored_urls.get(article.pk, ()) != row.additional_urls
        summary.images_changed += changed
        for name in _VALUE_FIELDS:
            if getattr(article, name) != getattr(row, name):
                setattr(article, name, getattr(row, name))
                changed = True
        if not article.is_active:
            article.is_active = True
            changed = True
        if article.image_url != row.image_url:
            article.image_url = row.image_url
            article_image_url_change(article=article)
            summary.image_changed += 1
            article.updated_at = now
            to_update_with_url.append(article)
        elif changed:
            article.updated_at = now
            to_update.append(article)
        else:
            summary.unchanged += 1
    summary.created += len(to_create)
    summary.updated += len(to_update) + len(to_update_with_url)
    if dry_run:
        return
    Article.objects.bulk_create(to_create, batch_size=CHUNK_SIZE)
    by_id = {article.article_id: article for article in [*existing.values(), *to_create]}
    additional_images_sync(
        wanted={by_id[row.article_id].pk: row.additional_urls for row in rows},
        stored=stored_urls,
    )
    # Download columns are written only where the URL changed: for the other rows the
    # snapshot read above may predate a download recorded meanwhile, which must survive.
    Article.objects.bulk_update(to_update, _UPDATE_FIELDS, batch_size=500)
    Article.objects.bulk_update(to_update_with_url, _URL_CHANGE_FIELDS, batch_size=500)


def _stored_additional_urls(pks: list[int]) -> dict[int, tuple[str, ...]]:
    """The additional image URLs of the articles ``pks``, by article pk, in position order."""
    urls: dict[int, list[str]] = {}
    rows = ArticleImage.objects.filter(article__in=pks).order_by("article", "position")
    for article_pk, url in rows.values_list("article_id", "url"):
        urls.setdefault(article_pk, []).append(url)
    return {pk: tuple(found) for pk, found in urls.items()}


def additional_images_sync(
    *, wanted: dict[int, tuple[str, ...]], stored: dict[int, tuple[str, ...]]
) -> None:
    """Make each article's additional images the ``wanted`` URLs (by article pk), in order.

    An image whose URL stays at its position keeps its file and vector; a new or moved URL
    is queued for download (pending); images beyond the list go, with their files once the
    transaction commits (their embeddings go at the next build).
    """
    changed = [pk for pk, urls in wanted.items() if stored.get(pk, ()) != urls]
    if not changed:
        return
    current = {
        (image.article_id, image.position): image
        for image in ArticleImage.objects.filter(article__in=changed)
    }
    to_create: list[ArticleImage] = []
    to_update: list[ArticleImage] = []
    for pk in changed:
        for position, url in enumerate(wanted[pk], start=1):
            image = current.pop((pk, position), None)
            if image is None:
                to_create.append(ArticleImage(article_id=pk, position=position, url=url))
            elif image.url != url:
                image.url, image.download_status = url, Article.DownloadStatus.PENDING
                image.download_error, image.download_attempts = "", 0
                to_update.append(image)
    ArticleImage.objects.bulk_update(
        to_update, ["url", "download_status", "download_error", "download_attempts"]
    )
    ArticleImage.objects.bulk_create(to_create)
    gone = list(current.values())  # positions no longer in the list
    if gone:
        ArticleImage.objects.filter(pk__in=[image.pk for image in gone]).delete()
        names = [str(image.image.name) for image in gone if image.image]
        transaction.on_commit(lambda: _delete_files(names))


def _delete_files(names: list[str]) -> None:
    files = ImageFiles()
    for name in names:
        files.delete(name)


def article_image_url_change(*, article: Article) -> Article:
    """Queue the article's image for download after its ``image_url`` changed (not saved).

    Shared by the import and the admin. The stored file and its columns stay until a new
    download replaces them; ``has_image`` is false meanwhile.
    """
    article.download_status = Article.DownloadStatus.PENDING
    article.download_error = ""
    article.download_attempts = 0
    return article


def catalog_import(
    *,
    path: Path | str,
    dry_run: bool = False,
    deactivate_missing: bool = False,
    format: str | None = None,
) -> ImportSummary:
    """Upsert the articles in ``path``; bad rows are skipped with a reason.

    The feed is Lookalike's CSV / JSON Lines, a Google Merchant Center feed (tab-separated or
    XML) or a Shopify product CSV, recognised by its header unless ``format`` says
    (``catalog.feeds``).

    Re-importing the same file changes nothing. A changed ``image_url`` marks the article's
    image for re-download. With ``deactivate_missing`` the file is the whole catalog:
    active articles absent from it are deactivated (never deleted). The import is one
    transaction: a crash part-way leaves the catalog as it was.
    """
    path = Path(path)
    summary = ImportSummary(dry_run=dry_run)
    first_seen: dict[str, int] = {}
    with transaction.atomic():
        chunk: list[_Row] = []
        for line, record in _records(path, format, summary):
            parsed = record if isinstance(record, str) else _parse(line, record)
            if isinstance(parsed, str):
                summary.skipped.append(SkippedRow(line=line, reason=parsed))
                continue
            if parsed.article_id in first_seen:
                summary.skipped.append(
                    SkippedRow(
                        line=line,
                        reason=MSG_DUPLICATE.format(
                            article_id=parsed.article_id,
                            first_line=first_seen[parsed.article_id],
                        ),
                    )
                )
                continue
            first_seen[parsed.article_id] = line
            summary.warnings.extend(SkippedRow(line=line, reason=w) for w in parsed.warnings)
            chunk.append(parsed)
            if len(chunk) >= CHUNK_SIZE:
                _apply_chunk(chunk, summary, dry_run=dry_run)
                chunk = []
        if chunk:
            _apply_chunk(chunk, summary, dry_run=dry_run)
        if deactivate_missing:
            summary.deactivated = _deactivate_missing(set(first_seen), dry_run=dry_run)
    for skipped in summary.skipped:
        logger.warning("%s line %d skipped: %s", path, skipped.line, skipped.reason)
    return summary


def _deactivate_missing(seen: set[str], *, dry_run: bool) -> int:
    """Deactivate active articles whose id is not in ``seen`` (chunked, no huge IN clause)."""
    active = Article.objects.filter(is_active=True).values_list("pk", "article_id")
    missing = [pk for pk, article_id in active.iterator(chunk_size=5000) if article_id not in seen]
    if not dry_run:
        now = timezone.now()
        for start in range(0, len(missing), 1000):
            Article.objects.filter(pk__in=missing[start : start + 1000]).update(
                is_active=False, updated_at=now
            )
    return len(missing)
