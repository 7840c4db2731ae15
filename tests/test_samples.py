"""The bundled sample catalogue and the synthetic catalogue generator."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from schemas import CatalogueUpdate, DecodeError, decode, encode
from streams.samples import (
    DUMMYJSON_PRODUCTS,
    SAMPLE_SIZE,
    TAXONOMY,
    TOPIC_KINDS,
    generate_catalogue,
    is_relevant,
    load_catalogue_file,
    product_topics,
    sample_catalogue,
)

N = 2000


@pytest.fixture(scope="module")
def generated() -> list[CatalogueUpdate]:
    return generate_catalogue(N, seed=7)


# --- the demo catalogue, catalogue files and the DummyJSON converter -------------------------------------

# Two products in DummyJSON's shape, written for this test (edge cases the bundled file may not have).
DUMMY = [
    {"id": 2, "title": "Eyeshadow Palette with Mirror", "description": "A palette of shades.", "category": "beauty",
     "price": 19.99, "discountPercentage": 5.5, "rating": 4.2, "stock": 44, "tags": ["beauty", "eyeshadow"],
     "brand": "Glamour Beauty", "sku": "SKU2", "weight": 3, "dimensions": {"width": 10, "height": 2, "depth": 8},
     "warrantyInformation": "1 year", "shippingInformation": "2 days", "availabilityStatus": "In Stock",
     "returnPolicy": "30 days", "minimumOrderQuantity": 1, "reviews": [], "meta": {"barcode": "123"},
     "thumbnail": "https://example.invalid/2.png"},
    {"id": 1, "title": "Kiwi", "description": "Fresh kiwi.", "category": "groceries", "price": 2.49,
     "discountPercentage": 0.0, "rating": 4.9, "stock": 0, "tags": ["fruits"], "sku": "SKU1", "weight": 1,
     "dimensions": {"width": 5, "height": 5, "depth": 5}, "warrantyInformation": "none",
     "shippingInformation": "1 day", "availabilityStatus": "Out of Stock", "returnPolicy": "none",
     "minimumOrderQuantity": 10, "reviews": [{"rating": 5}], "meta": {}},
]


def test_sample_catalogue_is_dummyjsons_real_products_unchanged_with_their_licence() -> None:
    import subprocess

    # The bundled file is upstream's bytes (the git blob named in NOTICE.md), and the MIT notice travels with it.
    blob = subprocess.run(["git", "hash-object", str(DUMMYJSON_PRODUCTS)], capture_output=True, text=True,
                          check=True).stdout.strip()
    notice = (DUMMYJSON_PRODUCTS.parent / "NOTICE.md").read_text()
    assert blob in notice
    licence = (DUMMYJSON_PRODUCTS.parent / "LICENSE").read_text()
    assert licence.startswith("The MIT License") and "Muhammad Ovi" in licence
    products = sample_catalogue("acme")
    assert len(products) == SAMPLE_SIZE and {p.tenant for p in products} == {"acme"}
    assert len({p.product_id for p in products}) == SAMPLE_SIZE
    assert sample_catalogue("acme") == products
    assert decode(CatalogueUpdate, encode(products[0])) == products[0]
    by_id = {p.product_id: p for p in products}
    mascara = by_id["dummyjson-1"]
    assert (mascara.title, mascara.brand, mascara.price) == ("Essence Mascara Lash Princess", "Essence", 9.99)
    assert mascara.category_path == ["Beauty", "Makeup"]
    assert len({p.category_path[-1] for p in products if p.category_path}) == 24
    assert sum(p.brand is not None for p in products) == 102
    assert all(p.price and p.price > 0 and p.margin is not None for p in products)


def test_dummyjson_conversion_loads_as_a_catalogue_file(tmp_path: Path) -> None:
    from streams.samples.dummyjson import convert

    data = convert(DUMMY)
    assert data == convert(list(reversed(DUMMY)))  # deterministic, in id order
    path = tmp_path / "catalogue.jsonl"
    path.write_bytes(data)
    products = load_catalogue_file(path, tenant="acme")
    assert [p.product_id for p in products] == ["dummyjson-1", "dummyjson-2"]
    kiwi, palette = products
    assert kiwi.tenant == "acme" and kiwi.stock == 0 and kiwi.brand is None and kiwi.currency == "USD"
    assert palette.brand == "Glamour Beauty" and palette.category_path and len(palette.category_path) == 2
    assert palette.margin is not None and 0.05 <= palette.margin <= 0.45
    assert product_topics(palette) >= {"brand:glamour beauty"}
    gz = tmp_path / "catalogue.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    assert load_catalogue_file(gz, tenant="acme") == products


def test_bad_catalogue_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"product_id": "a", "title": "ok", "updated_at": 1}\n{"product_id": "b", "updated_at": 1}\n')
    with pytest.raises(DecodeError, match="bad.jsonl:2"):
        load_catalogue_file(path)


# --- the synthetic generator ---------------------------------------------------------------------------


def test_generator_makes_n_valid_records(generated: list[CatalogueUpdate]) -> None:
    assert len(generated) == N
    for record in generated:
        # survives the wire format, i.e. is valid under the contract
        assert decode(CatalogueUpdate, encode(record)) == record
        assert record.tenant == "demo"
        assert record.title and record.description and record.brand
        assert record.category_path and record.category_path[0] in TAXONOMY
        assert record.price is not None and record.price > 0 and record.currency == "USD"
        assert record.margin is not None and -1 <= record.margin <= 1
        assert record.stock is not None and record.stock >= 0
        assert record.attributes and isinstance(record.attributes.get("product_type"), str)
    assert len({r.product_id for r in generated}) == N


def test_generator_is_deterministic_for_a_seed(generated: list[CatalogueUpdate]) -> None:
    assert generate_catalogue(N, seed=7) == generated
    assert generate_catalogue(300, seed=7) == generated[:300]  # a prefix of a longer run
    other = generate_catalogue(300, seed=8)
    assert [r.title for r in other] != [r.title for r in generated[:300]]
    assert not {r.product_id for r in other} & {r.product_id for r in generated}


def test_generator_tenant_and_edge_sizes() -> None:
    assert generate_catalogue(0) == []
    assert [r.tenant for r in generate_catalogue(3, tenant="shop-2")] == ["shop-2"] * 3
    with pytest.raises(ValueError):
        generate_catalogue(-1)


def test_generated_catalogue_is_varied(generated: list[CatalogueUpdate]) -> None:
    roots = Counter(r.category_path[0] for r in generated if r.category_path)
    leaves = {tuple(r.category_path) for r in generated if r.category_path}
    brands = {r.brand for r in generated}
    prices = sorted(r.price for r in generated if r.price is not None)
    assert len(roots) == len(TAXONOMY) == 10
    assert all(5 <= len(subs) <= 8 for subs in TAXONOMY.values())
    assert min(roots.values()) > N / 10 / 3  # roughly even spread over roots
    assert len(leaves) >= 50
    assert len(brands) >= 50
    assert prices[0] < 5 and prices[-1] > 500  # cheap groceries to expensive furniture/electronics
    assert len(set(prices)) > 200
    assert len({r.title for r in generated}) > 0.9 * N
    out_of_stock = sum(r.stock == 0 for r in generated)
    assert 0 < out_of_stock < 0.2 * N
    assert len({r.margin for r in generated}) > 100
    colours = {r.attributes.get("colour") for r in generated if r.attributes}
    assert len(colours) > 10


def test_prices_follow_their_category(generated: list[CatalogueUpdate]) -> None:
    def median(root: str) -> float:
        ps = sorted(r.price for r in generated if r.category_path and r.category_path[0] == root and r.price)
        return ps[len(ps) // 2]

    assert median("Grocery") < median("Clothing") < median("Furniture")


def test_product_topics_are_ground_truth(generated: list[CatalogueUpdate]) -> None:
    record = generated[0]
    topics = product_topics(record)
    kinds = {t.split(":", 1)[0] for t in topics}
    assert {"root", "category", "type", "brand"} <= kinds <= set(TOPIC_KINDS)
    assert record.category_path and f"root:{record.category_path[0].lower()}" in topics
    assert record.brand and f"brand:{record.brand.lower()}" in topics
    assert all(t == t.lower() for t in topics)
    assert is_relevant(set(), record)
    assert is_relevant(topics, record)
    assert not is_relevant({"colour:no-such-colour"}, record)
    # an intent of type + colour picks out a small, non-empty subset of the catalogue
    coloured = next(r for r in generated if r.attributes and "colour" in r.attributes)
    assert coloured.attributes is not None
    intent = {f"type:{coloured.attributes['product_type']}", f"colour:{coloured.attributes['colour']}"}
    matches = [r for r in generated if is_relevant(intent, r)]
    assert coloured in matches and len(matches) < N / 20


@pytest.mark.parametrize("ranker_features", [False, True])
def test_session_traffic_logs_the_features_asked_for(ranker_features: bool) -> None:
    from models.ranker import FEATURES
    from schemas import SearchLog
    from streams.sample_sessions import session_traffic

    traffic = session_traffic(30, tenants=("a", "b"), seed=3, ranker_features=ranker_features)
    logs = [decode(SearchLog, value) for topic, _, value in traffic.messages if topic == "searches"]
    assert logs and all(item.features["margin_rate"] == 0.25 for log in logs for item in log.items)
    names = {tuple(item.features) for log in logs for item in log.items}
    assert names == ({FEATURES} if ranker_features else {("dense", "margin_rate")})
