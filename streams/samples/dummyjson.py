"""Convert a DummyJSON ``products.json`` (MIT) into catalogue JSON lines: the demo's bundled catalogue.

shoprank ships DummyJSON's ``database/products.json`` unchanged in ``data/dummyjson/`` (with its licence and
provenance); :func:`streams.samples.sample_catalogue` converts it at load time. A newer upstream file
converts the same way::

    python -m streams.samples.dummyjson products.json catalogue.jsonl
    shoprank demo --catalogue catalogue.jsonl

What is derived: ``margin`` (a fixed function of the product id, 0.05-0.45: DummyJSON has none), a two-level
``category_path`` above DummyJSON's flat category, ``currency`` USD, a fixed ``updated_at``, and ids
``dummyjson-<id>``. The conversion is deterministic: the same input gives byte-identical output.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import orjson

__all__ = ["CATEGORY_ROOTS", "LEAF_NAMES", "UPDATED_AT", "convert", "derived_margin", "main"]

#: Version stamp of every bundled product (2026-01-01T00:00:00Z, epoch ms).
UPDATED_AT = 1_767_225_600_000

#: DummyJSON's flat category slug -> the root category we file it under (our addition).
CATEGORY_ROOTS: dict[str, str] = {
    "beauty": "Beauty",
    "fragrances": "Beauty",
    "skin-care": "Beauty",
    "smartphones": "Electronics",
    "laptops": "Electronics",
    "tablets": "Electronics",
    "mobile-accessories": "Electronics",
    "mens-shirts": "Men",
    "mens-shoes": "Men",
    "mens-watches": "Men",
    "tops": "Women",
    "womens-bags": "Women",
    "womens-dresses": "Women",
    "womens-jewellery": "Women",
    "womens-shoes": "Women",
    "womens-watches": "Women",
    "sunglasses": "Accessories",
    "furniture": "Home & Kitchen",
    "home-decoration": "Home & Kitchen",
    "kitchen-accessories": "Home & Kitchen",
    "groceries": "Groceries",
    "sports-accessories": "Sports & Outdoors",
    "motorcycle": "Vehicles",
    "vehicle": "Vehicles",
}

#: DummyJSON's category slug -> a display name for the leaf category.
LEAF_NAMES: dict[str, str] = {
    "beauty": "Makeup",
    "fragrances": "Fragrances",
    "skin-care": "Skin Care",
    "smartphones": "Smartphones",
    "laptops": "Laptops",
    "tablets": "Tablets",
    "mobile-accessories": "Mobile Accessories",
    "mens-shirts": "Men's Shirts",
    "mens-shoes": "Men's Shoes",
    "mens-watches": "Men's Watches",
    "tops": "Tops",
    "womens-bags": "Women's Bags",
    "womens-dresses": "Women's Dresses",
    "womens-jewellery": "Women's Jewellery",
    "womens-shoes": "Women's Shoes",
    "womens-watches": "Women's Watches",
    "sunglasses": "Sunglasses",
    "furniture": "Furniture",
    "home-decoration": "Home Decoration",
    "kitchen-accessories": "Kitchen Accessories",
    "groceries": "Groceries",
    "sports-accessories": "Sports Accessories",
    "motorcycle": "Motorcycles",
    "vehicle": "Cars",
}


def derived_margin(product_id: str) -> float:
    """A plausible gross margin in [0.05, 0.45], fixed by a BLAKE2b hash of ``product_id`` (DummyJSON has none)."""
    h = int.from_bytes(hashlib.blake2b(f"margin:{product_id}".encode(), digest_size=8).digest(), "big")
    return round(0.05 + 0.40 * (h / 2**64), 4)


def _product(src: dict[str, Any]) -> dict[str, Any]:
    product_id = f"dummyjson-{src['id']}"
    slug = src["category"]
    attributes: dict[str, Any] = {
        "rating": float(src["rating"]),
        "tags": [str(t) for t in src.get("tags", [])],
        "sku": src["sku"],
        "discount_percentage": float(src["discountPercentage"]),
        "weight": src["weight"],
        "width": float(src["dimensions"]["width"]),
        "height": float(src["dimensions"]["height"]),
        "depth": float(src["dimensions"]["depth"]),
        "warranty": src["warrantyInformation"],
        "shipping": src["shippingInformation"],
        "availability": src["availabilityStatus"],
        "return_policy": src["returnPolicy"],
        "minimum_order_quantity": src["minimumOrderQuantity"],
        "review_count": len(src.get("reviews", [])),
        "source_category": slug,
    }
    if barcode := src.get("meta", {}).get("barcode"):
        attributes["barcode"] = str(barcode)
    line: dict[str, Any] = {
        "product_id": product_id,
        "title": src["title"],
        "description": src["description"],
        "category_path": [CATEGORY_ROOTS[slug], LEAF_NAMES[slug]],
        "price": float(src["price"]),
        "currency": "USD",
        "margin": derived_margin(product_id),
        "stock": int(src["stock"]),
        "attributes": attributes,
        "updated_at": UPDATED_AT,
    }
    if src.get("brand"):
        line["brand"] = src["brand"]
    if src.get("thumbnail"):
        line["image_url"] = src["thumbnail"]
    return line


def convert(products: list[dict[str, Any]]) -> bytes:
    """DummyJSON products -> JSON lines (no tenant: it is added at load time), in source id order."""
    lines = [_product(p) for p in sorted(products, key=lambda p: p["id"])]
    return b"".join(orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.samples.dummyjson PRODUCTS_JSON OUT_JSONL``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = Path(args[0]), Path(args[1])
    Path(out).write_bytes(convert(orjson.loads(src.read_bytes())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
