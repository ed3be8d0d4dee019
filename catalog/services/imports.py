"""Catalog import: an idempotent upsert of articles from CSV or JSON Lines."""

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
from lookalike_core.tabular import Record, TabularError, tabular_open

from catalog.models import URL_NOT_URI, Article, article_id_problem, http_url_validator

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("article_id", "image_url")
KNOWN_COLUMNS = ("article_id", "image_url", "title", "category")
CHUNK_SIZE = 2000
MAX_ID_LENGTH: int = Article._meta.get_field("article_id").max_length or 255
MAX_URL_LENGTH: int = Article._meta.get_field("image_url").max_length or 2048

MSG_MISSING_ID = "missing article_id"
MSG_MISSING_URL = "missing image_url"
MSG_BAD_URL = "invalid image_url {url!r}: only absolute http(s) URLs are accepted"
MSG_BAD_URL_DETAIL = "invalid image_url {url!r}: {detail}"
MSG_DUPLICATE = "duplicate article_id {article_id!r} (first seen on line {first_line})"
MSG_NUL = "contains a NUL character (in {field!r})"
MSG_SURROGATE = "contains an unpaired surrogate like \\ud800, which is not text (in {field!r})"

_UPDATE_FIELDS = ["title", "category", "metadata", "is_active", "updated_at"]
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
    skipped: list[SkippedRow] = field(default_factory=list)
    dry_run: bool = False

    def describe(self) -> str:
        text = (
            f"{self.created} new, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped"
        )
        if self.image_changed:
            text += f" ({self.image_changed} with a new image URL, queued for download)"
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


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _records(path: Path) -> Iterator[tuple[int, Record]]:
    try:
        yield from tabular_open(path, required=REQUIRED_COLUMNS).records()
    except TabularError as exc:
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
    article_id = _text(record.get("article_id"))
    image_url = _text(record.get("image_url"))
    problem = _text_problem(record) or _id_problem(article_id) or _url_problem(image_url)
    if problem:
        return problem
    metadata = {
        key: value
        for key, value in record.items()
        if key not in KNOWN_COLUMNS and value not in (None, "")
    }
    return _Row(
        line=line,
        article_id=article_id,
        image_url=image_url,
        title=_text(record.get("title"))[:1000],
        category=_text(record.get("category"))[:255],
        metadata=metadata,
    )


def _text_problem(record: dict[str, Any]) -> str | None:
    # SQLite stores NUL; PostgreSQL rejects it (text and jsonb) and would abort the import.
    for key, value in record.items():
        if _has_nul(key) or _has_nul(value):
            return MSG_NUL.format(field=key)
        if _has_surrogate(key) or _has_surrogate(value):
            return MSG_SURROGATE.format(field=key)
    return None


def _id_problem(article_id: str) -> str | None:
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
                    title=row.title,
                    category=row.category,
                    metadata=row.metadata,
                )
            )
            continue
        changed = False
        for name in ("title", "category", "metadata"):
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
    # Download columns are written only where the URL changed: for the other rows the
    # snapshot read above may predate a download recorded meanwhile, which must survive.
    Article.objects.bulk_update(to_update, _UPDATE_FIELDS, batch_size=500)
    Article.objects.bulk_update(to_update_with_url, _URL_CHANGE_FIELDS, batch_size=500)


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
    *, path: Path | str, dry_run: bool = False, deactivate_missing: bool = False
) -> ImportSummary:
    """Upsert the articles in ``path`` (CSV or JSON Lines); bad rows are skipped with a reason.

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
        for line, record in _records(path):
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
