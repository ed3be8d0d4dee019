"""Shop feeds written from the public specifications: Google Merchant Center (tab-separated
and RSS/XML) and Shopify's product CSV, with variants, several images, odd encodings and bad
rows; counts, skip reasons and exit codes as the README documents them."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.feeds import (
    GOOGLE,
    MSG_NO_SKU,
    MSG_UNKNOWN_HEADER,
    MSG_XML_DOCTYPE,
    SHOPIFY,
)
from catalog.models import Article, ArticleImage
from catalog.services.imports import MSG_MISSING_URL, CatalogImportError, catalog_import

pytestmark = pytest.mark.django_db

CDN = "https://cdn.example.com"

# Google Merchant Center, tab-separated text (support.google.com/merchants/answer/7052112):
# attribute names in the header, additional_image_link comma-separated, variants sharing an
# item_group_id. Line 5 lacks its image_link; line 6 repeats an id.
GOOGLE_TSV = "\t".join([
    "id", "title", "description", "link", "image_link", "additional_image_link",
    "availability", "price", "brand", "product_type", "google_product_category",
    "item_group_id", "color",
]) + "\n" + "\n".join("\t".join(row) for row in [
    ["TS-RED-M", "T-shirt rouge é", "Coton", f"{CDN}/p/ts", f"{CDN}/ts-red.jpg",
     f"{CDN}/ts-red-back.jpg,{CDN}/ts-red-side.jpg", "in_stock", "15.00 EUR", "Acme",
     "Apparel > Shirts", "212", "TS", "red"],
    ["TS-BLUE-M", "T-shirt bleu", "Coton", f"{CDN}/p/ts", f"{CDN}/ts-blue.jpg", "",
     "out_of_stock", "15.00 EUR", "Acme", "Apparel > Shirts", "212", "TS", "blue"],
    ["MUG-1", "Mug", "", f"{CDN}/p/mug", f"{CDN}/mug.jpg", "", "in stock", "8.00 EUR", "",
     "", "Home > Kitchen", "", ""],
    ["LAMP-1", "Lamp", "", f"{CDN}/p/lamp", "", "", "in stock", "20.00 EUR", "", "", "", "", ""],
    ["MUG-1", "Mug again", "", "", f"{CDN}/mug2.jpg", "", "", "", "", "", "", "", ""],
]) + "\n"

# Google Merchant Center RSS 2.0 (support.google.com/merchants/answer/160589): the g:
# namespace, additional_image_link repeated, RSS's own <title> beside g: attributes.
GOOGLE_XML = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">
<channel>
<title>Shop</title>
<item>
  <g:id>SH-38</g:id>
  <title>Chaussure \xe9t\xe9</title>
  <g:image_link>{CDN}/sh-38.jpg</g:image_link>
  <g:additional_image_link>{CDN}/sh-38-b.jpg</g:additional_image_link>
  <g:additional_image_link>{CDN}/sh-38-c.jpg</g:additional_image_link>
  <g:availability>in_stock</g:availability>
  <g:google_product_category>Apparel &amp; Accessories &gt; Shoes</g:google_product_category>
  <g:item_group_id>SH</g:item_group_id>
  <g:size>38</g:size>
  <g:shipping><g:country>FR</g:country><g:price>4.95 EUR</g:price></g:shipping>
</item>
<item>
  <g:id>SH-39</g:id>
  <title>Chaussure</title>
  <g:image_link>{CDN}/sh-39.jpg</g:image_link>
  <g:availability>out_of_stock</g:availability>
  <g:item_group_id>SH</g:item_group_id>
</item>
<item>
  <g:id>NO-IMAGE</g:id>
  <title>Broken</title>
</item>
</channel>
</rss>
"""

# Shopify product CSV (help.shopify.com/en/manual/products/import-export/using-csv): one row
# per variant, extra rows per image, joined by Handle; product fields on the first row only.
SHOPIFY_HEADER = [
    "Handle", "Title", "Body (HTML)", "Vendor", "Type", "Tags", "Option1 Name", "Option1 Value",
    "Variant SKU", "Variant Inventory Qty", "Variant Inventory Policy", "Variant Price",
    "Image Src", "Image Position", "Variant Image", "Status",
]
SHOPIFY_ROWS = [
    ["shirt", "Shirt", "<p>Soft</p>", "Acme", "Shirts", "summer", "Color", "Red", "SH-R", "3",
     "deny", "20", f"{CDN}/shirt-1.jpg", "1", f"{CDN}/shirt-red.jpg", "active"],
    ["shirt", "", "", "", "", "", "", "Blue", "SH-B", "0", "deny", "20", f"{CDN}/shirt-2.jpg",
     "2", "", ""],
    ["shirt", "", "", "", "", "", "", "Green", "SH-G", "0", "continue", "20", "", "", "", ""],
    ["shirt", "", "", "", "", "", "", "", "", "", "", "", f"{CDN}/shirt-3.jpg", "3", "", ""],
    ["poster", "Poster", "", "Acme", "Art", "", "Title", "Default Title", "", "1", "deny", "9",
     f"{CDN}/poster.jpg", "1", "", "active"],
    ["cap", "Cap", "", "", "Hats", "", "Size", "S", "", "", "", "5", f"{CDN}/cap.jpg", "1", "",
     ""],
    ["cap", "", "", "", "", "", "", "L", "", "", "", "5", "", "", "", ""],
    ["bare", "Bare", "", "", "", "", "Title", "Default Title", "BARE-1", "", "", "1", "", "", "",
     ""],
]


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    import csv

    buffer = StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def gallery(article_id: str) -> list[str]:
    return list(
        ArticleImage.objects.filter(article__article_id=article_id)
        .order_by("position").values_list("url", flat=True)
    )


def run(path: Path, *args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("import_catalog", str(path), *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


def test_google_tsv_in_utf16_imports_variants_images_and_availability(tmp_path):
    path = tmp_path / "products.txt"
    path.write_text(GOOGLE_TSV, encoding="utf-16")  # with its byte order mark
    status, out, err = run(path)
    assert status == 2
    assert "(google feed): 3 new, 0 updated, 0 unchanged, 2 skipped" in out
    assert f"line 5: skipped: {MSG_MISSING_URL}" in err
    assert "line 6: skipped: duplicate article_id 'MUG-1' (first seen on line 4)" in err
    red = Article.objects.get(article_id="TS-RED-M")
    assert (red.title, red.category, red.item_group_id, red.availability) == (
        "T-shirt rouge é", "Apparel > Shirts", "TS", "in stock"
    )
    assert red.metadata["color"] == "red" and red.metadata["price"] == "15.00 EUR"
    assert gallery("TS-RED-M") == [f"{CDN}/ts-red-back.jpg", f"{CDN}/ts-red-side.jpg"]
    assert Article.objects.get(article_id="TS-BLUE-M").availability == "out of stock"
    assert Article.objects.get(article_id="MUG-1").category == "Home > Kitchen"
    again = catalog_import(path=path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_google_xml_in_latin1_with_repeated_images(tmp_path):
    path = tmp_path / "feed.xml"
    path.write_bytes(GOOGLE_XML.encode("latin-1"))
    summary = catalog_import(path=path)
    assert summary.format == GOOGLE
    assert (summary.created, [(s.line, s.reason) for s in summary.skipped]) == (
        2, [(24, MSG_MISSING_URL)]
    )
    shoe = Article.objects.get(article_id="SH-38")
    assert (shoe.title, shoe.category, shoe.item_group_id) == (
        "Chaussure été", "Apparel & Accessories > Shoes", "SH"
    )
    assert shoe.metadata["size"] == "38"
    assert gallery("SH-38") == [f"{CDN}/sh-38-b.jpg", f"{CDN}/sh-38-c.jpg"]
    assert catalog_import(path=path).unchanged == 2


def test_xml_with_a_doctype_is_refused(tmp_path):
    path = tmp_path / "evil.xml"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<rss><channel><item><g:id>1</g:id></item></channel></rss>"
    )
    message = MSG_XML_DOCTYPE.format(path=path, line=1)
    with pytest.raises(CatalogImportError, match=re.escape(message)):
        catalog_import(path=path)
    bad = tmp_path / "bad.xml"
    bad.write_text("<rss><channel><item></channel></rss>")
    status, _, err = run(bad)
    assert status == 1 and "not well-formed XML" in err and not Article.objects.exists()


def test_shopify_csv_gives_an_article_per_variant_grouped_by_handle(tmp_path):
    path = tmp_path / "products_export.csv"
    path.write_text(csv_text(SHOPIFY_HEADER, SHOPIFY_ROWS), encoding="utf-8-sig")
    status, out, err = run(path)
    assert status == 2 and "(shopify feed): 4 new" in out and "3 skipped" in out
    reason = MSG_NO_SKU.format(handle="cap", count=2)
    assert f"line 7: skipped: {reason}" in err and f"line 8: skipped: {reason}" in err
    red, blue, green = (Article.objects.get(article_id=sku) for sku in ("SH-R", "SH-B", "SH-G"))
    assert {red.item_group_id, blue.item_group_id, green.item_group_id} == {"shirt"}
    assert (red.title, red.category) == ("Shirt / Red", "Shirts")
    # The variant's own image first, then the product's images in Image Position order.
    assert red.image_url == f"{CDN}/shirt-red.jpg"
    assert gallery("SH-R") == [f"{CDN}/shirt-1.jpg", f"{CDN}/shirt-2.jpg", f"{CDN}/shirt-3.jpg"]
    assert blue.image_url == f"{CDN}/shirt-1.jpg"
    assert gallery("SH-B") == [f"{CDN}/shirt-2.jpg", f"{CDN}/shirt-3.jpg"]
    assert (red.availability, blue.availability, green.availability) == (
        "in stock", "out of stock", "backorder"
    )
    assert red.metadata["Vendor"] == "Acme" and red.metadata["Option1 Value"] == "Red"
    poster = Article.objects.get(article_id="poster")  # one variant without a SKU: the Handle
    assert poster.title == "Poster" and poster.item_group_id == "poster"
    # A product without any image: the import's own reason.
    assert not Article.objects.filter(article_id="BARE-1").exists()
    assert f"line 9: skipped: {MSG_MISSING_URL}" in err
    assert catalog_import(path=path).unchanged == 4


def test_format_is_recognised_or_forced(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("sku,picture\n1,https://cdn.example.com/1.jpg\n")
    status, _, err = run(path)
    assert status == 1 and MSG_UNKNOWN_HEADER.split(";")[0].format(path=path) in err
    forced = tmp_path / "google.csv"
    forced.write_text("article_id,image_url\nA,https://cdn.example.com/a.jpg\n")
    status, _, err = run(forced, "--format", SHOPIFY)
    assert status == 1 and "a shopify feed needs the columns Handle, Image Src" in err
    status, _, _ = run(forced, "--format", "lookalike")
    assert status == 0 and Article.objects.filter(article_id="A").exists()
