"""Shop feeds as catalog records: Lookalike's own columns, Google Merchant Center (tab-separated
text or RSS/XML) and Shopify's product CSV, recognised by their header (or forced).

Each format is mapped onto the import's columns (``article_id``, ``image_url``, ``title``,
``category``, ``additional_image_urls``, ``item_group_id``, ``availability``); every other
non-empty column is kept as it came, as metadata. A record is yielded with the line it
starts on, or as the reason it cannot be used (the import skips it and goes on).

XML is parsed with expat and refuses any DOCTYPE: a feed needs none, and refusing it rules
out external entities and entity expansion ("billion laughs") without a dependency.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike_core.tabular import Record, TabularError, tabular_open

LOOKALIKE = "lookalike"
GOOGLE = "google"
SHOPIFY = "shopify"
FORMATS = (LOOKALIKE, GOOGLE, SHOPIFY)

LOOKALIKE_REQUIRED = ("article_id", "image_url")
GOOGLE_REQUIRED = ("id", "image_link")
SHOPIFY_REQUIRED = ("Handle", "Image Src")
XML_EXTENSIONS = (".xml", ".rss")
GOOGLE_NAMESPACE = "http://base.google.com/ns/1.0"
# Google's attribute -> the import's column.
GOOGLE_COLUMNS = {
    "id": "article_id", "title": "title", "image_link": "image_url",
    "additional_image_link": "additional_image_urls", "item_group_id": "item_group_id",
    "availability": "availability",
}
SCALAR_COLUMNS = ("article_id", "title", "image_url", "item_group_id", "availability")
SHOPIFY_CONSUMED = (
    "Handle", "Title", "Type", "Image Src", "Image Position", "Image Alt Text", "Variant SKU",
    "Variant Image", "Variant Inventory Qty", "Variant Inventory Policy",
)
SHOPIFY_VARIANT_COLUMNS = ("Variant SKU", "Option1 Value", "Variant Price")
DEFAULT_OPTION = "Default Title"  # Shopify's option value of a product without variants

MSG_UNKNOWN_HEADER = (
    "{path}: not a feed this import knows; the header needs article_id, image_url "
    "(Lookalike), id, image_link (Google Merchant Center) or Handle, Image Src (Shopify); "
    "got {header}"
)
MSG_FORMAT_COLUMNS = "{path}: a {format} feed needs the columns {required}; missing {missing}"
MSG_UNKNOWN_FORMAT = "unknown feed format {format!r}; use one of " + ", ".join(FORMATS)
MSG_XML = "{path}: line {line}: not well-formed XML: {error}"
MSG_XML_DOCTYPE = "{path}: line {line}: XML with a DOCTYPE is refused (a feed needs none)"
MSG_XML_FORMAT = "{path}: an XML feed is a Google Merchant Center feed (--format google)"
MSG_NO_SKU = "variant of {handle!r} without a Variant SKU (the product has {count} variants)"
MSG_ORPHAN_ROW = "row of {handle!r} before its product row (no Title)"


class FeedError(Exception):
    """The feed as a whole cannot be read (missing, unreadable, unknown header, bad XML)."""


@dataclass(frozen=True)
class Feed:
    format: str
    records: Iterator[tuple[int, Record]]


def feed_open(path: Path | str, *, format: str | None = None) -> Feed:
    """The feed at ``path`` as import records, its format recognised (or ``format``)."""
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise FeedError(MSG_UNKNOWN_FORMAT.format(format=format))
    if path.suffix.lower() in XML_EXTENSIONS and path.is_file():
        if format not in (None, GOOGLE):
            raise FeedError(MSG_XML_FORMAT.format(path=path))
        return Feed(GOOGLE, _google_records(_xml_items(path)))
    try:
        table = tabular_open(path)
    except TabularError as exc:
        raise FeedError(str(exc)) from exc
    columns = table.columns
    found = format or (LOOKALIKE if columns is None else _recognised(path, columns))
    if columns is not None:
        _check_columns(path, found, columns)
    records = table.records()
    if found == GOOGLE:
        return Feed(found, _google_records(records))
    if found == SHOPIFY:
        return Feed(found, _shopify_records(records))
    return Feed(found, records)


def _recognised(path: Path, columns: list[str]) -> str:
    names = set(columns)
    if "Handle" in names and ({"Image Src", "Variant SKU"} & names):
        return SHOPIFY
    if set(GOOGLE_REQUIRED) <= names:
        return GOOGLE
    if set(LOOKALIKE_REQUIRED) <= names:
        return LOOKALIKE
    raise FeedError(MSG_UNKNOWN_HEADER.format(path=path, header=", ".join(columns) or "empty"))


def _check_columns(path: Path, format: str, columns: list[str]) -> None:
    required = {LOOKALIKE: LOOKALIKE_REQUIRED, GOOGLE: GOOGLE_REQUIRED,
                SHOPIFY: SHOPIFY_REQUIRED}[format]
    missing = [name for name in required if name not in columns]
    if missing:
        raise FeedError(MSG_FORMAT_COLUMNS.format(
            path=path, format=format, required=", ".join(required), missing=", ".join(missing)
        ))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _google_records(records: Iterator[tuple[int, Record]]) -> Iterator[tuple[int, Record]]:
    for line, record in records:
        yield line, record if isinstance(record, str) else _google_record(record)


def _google_record(record: dict[str, Any]) -> dict[str, Any]:
    """A Google Merchant Center item as import columns; the category is ``product_type``
    (the shop's own), else ``google_product_category``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = key.strip().removeprefix("g:")
        if _blank(value):
            continue
        column = GOOGLE_COLUMNS.get(name, name)
        if isinstance(value, list) and column in SCALAR_COLUMNS:  # <title> and <g:title>
            value = value[0]
        out[column] = value
    category = out.pop("product_type", None) or out.get("google_product_category")
    if isinstance(category, list):
        category = category[0]
    if category:
        out["category"] = category
    return out


class _ItemCollector:
    """expat handlers collecting the <item> (RSS) or <entry> (Atom) elements as dicts of
    their children's text (a repeated child, like additional_image_link, becomes a list)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[int, Record]] = []
        self.item: dict[str, Any] | None = None
        self.depth = 0
        self.text: list[str] = []
        self.line = 0
        self.parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.text.append
        self.parser.StartDoctypeDeclHandler = self.refuse
        self.parser.EntityDeclHandler = self.refuse

    def refuse(self, *_: object) -> None:
        raise FeedError(MSG_XML_DOCTYPE.format(path=self.path, line=self.parser.CurrentLineNumber))

    def start(self, name: str, _attrs: dict[str, str]) -> None:
        if self.item is None:
            if name.rsplit(" ", 1)[-1] in ("item", "entry"):
                self.item, self.depth, self.line = {}, 0, self.parser.CurrentLineNumber
            return
        self.depth += 1
        self.text.clear()

    def end(self, name: str) -> None:
        if self.item is None:
            return
        if self.depth == 0:
            self.items.append((self.line, self.item))
            self.item = None
            return
        if self.depth == 1:
            self._add(name.rsplit(" ", 1)[-1], "".join(self.text).strip())
        self.depth -= 1
        self.text.clear()

    def _add(self, key: str, value: str) -> None:
        assert self.item is not None
        if key not in self.item:
            self.item[key] = value
            return
        previous = self.item[key]
        self.item[key] = [*previous, value] if isinstance(previous, list) else [previous, value]


def _xml_items(path: Path) -> Iterator[tuple[int, Record]]:
    """The items of a Google XML feed, read in chunks, with the line each starts on."""
    collector = _ItemCollector(path)
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(64 * 1024):
                collector.parser.Parse(chunk, False)
                yield from collector.items
                collector.items.clear()
            collector.parser.Parse(b"", True)
    except xml.parsers.expat.ExpatError as exc:
        raise FeedError(MSG_XML.format(path=path, line=exc.lineno,
                                       error=xml.parsers.expat.ErrorString(exc.code))) from exc
    yield from collector.items


def _shopify_records(records: Iterator[tuple[int, Record]]) -> Iterator[tuple[int, Record]]:
    """One record per variant (article id = Variant SKU), grouped by Handle.

    A Shopify export has one row per variant and one per extra image, joined by Handle; the
    product's fields are on its first row. The rows of the whole file are read first, since
    nothing guarantees a product's rows are adjacent.
    """
    products: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for line, record in records:
        if isinstance(record, str):
            yield line, record
            continue
        handle = str(record.get("Handle") or "").strip()
        if not handle:
            yield line, "missing Handle"
            continue
        products.setdefault(handle, []).append((line, record))
    for handle, rows in products.items():
        yield from _shopify_product(handle, rows)


def _shopify_product(
    handle: str, rows: list[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, Record]]:
    product = next((record for _, record in rows if not _blank(record.get("Title"))), None)
    if product is None:
        for line, _ in rows:
            yield line, MSG_ORPHAN_ROW.format(handle=handle)
        return
    images = _shopify_images(rows)
    variants = [
        (line, record) for line, record in rows
        if any(not _blank(record.get(column)) for column in SHOPIFY_VARIANT_COLUMNS)
    ]
    for line, variant in variants:
        sku = str(variant.get("Variant SKU") or "").strip()
        if not sku and len(variants) > 1:
            yield line, MSG_NO_SKU.format(handle=handle, count=len(variants))
            continue
        primary = str(variant.get("Variant Image") or "").strip() or (images[0] if images else "")
        metadata = {
            key: value for key, value in {**product, **variant}.items()
            if key not in SHOPIFY_CONSUMED and not _blank(value)
        }
        options = [str(variant.get(f"Option{n} Value") or "").strip() for n in (1, 2, 3)]
        options = [option for option in options if option and option != DEFAULT_OPTION]
        title = str(product.get("Title")).strip()
        yield line, {
            **metadata,
            "article_id": sku or handle,
            "image_url": primary,
            "additional_image_urls": [url for url in images if url != primary],
            "title": " / ".join([title, *options]),
            "category": str(product.get("Type") or "").strip(),
            "item_group_id": handle,
            "availability": _shopify_availability(variant),
        }


def _shopify_images(rows: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The product's image URLs in ``Image Position`` order (file order where none)."""
    found: list[tuple[float, int, str]] = []
    for order, (_, record) in enumerate(rows):
        url = str(record.get("Image Src") or "").strip()
        if not url:
            continue
        try:
            position = float(str(record.get("Image Position") or "").strip())
        except ValueError:
            position = float("inf")
        found.append((position, order, url))
    return list(dict.fromkeys(url for _, _, url in sorted(found)))


def _shopify_availability(variant: dict[str, Any]) -> str:
    """From the inventory columns when exported: in stock, backorder (sold when out), or out."""
    quantity = str(variant.get("Variant Inventory Qty") or "").strip()
    if not quantity:
        return ""
    try:
        if float(quantity) > 0:
            return "in stock"
    except ValueError:
        return ""
    policy = str(variant.get("Variant Inventory Policy") or "").strip().lower()
    return "backorder" if policy == "continue" else "out of stock"
