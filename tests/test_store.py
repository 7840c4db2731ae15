"""One conformance suite for every VectorStore backend, plus congruence between them.

Runs on the real Qdrant Edge engine (a shard directory in tmp_path) and on qdrant-client's local
mode. Dense vectors come from a deterministic fake (hashed bag of words, 32-d): this suite is about
the store; the ONNX embedder has its own tests.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from models.store import (
    CollectionNotFound,
    DimensionMismatch,
    EdgeStore,
    Hit,
    InvalidRequest,
    PointNotFound,
    ProductPoint,
    QdrantServerStore,
    SearchFilter,
    StoreError,
    VectorStore,
    open_store,
)
from models.store.base import point_id
from models.store.fusion import Fusion, Scored, rank, rrf, to_hits

REPO = Path(__file__).resolve().parents[1]
DIM = 32
TENANT = "demo"
KINDS = ["edge", "qdrant"]

# One product a row reads better than the formatter's one field a line.
# id, title, brand, category_path, price, stock, description
# fmt: off
CATALOGUE: list[tuple[str, str, str, tuple[str, ...], float, int, str]] = [
    ("p01", "Sony XJ-9000 wireless noise cancelling headphones", "Sony", ("Electronics", "Audio", "Headphones"), 349.0, 12, "over-ear headphones with 30 hour battery and adaptive noise cancelling"),
    ("p02", "Bose QuietComfort wireless headphones", "Bose", ("Electronics", "Audio", "Headphones"), 299.0, 0, "comfortable over-ear noise cancelling headphones for travel"),
    ("p03", "Sennheiser HD 560 open-back headphones", "Sennheiser", ("Electronics", "Audio", "Headphones"), 179.0, 5, "wired studio headphones for critical listening"),
    ("p04", "JBL Tune earbuds", "JBL", ("Electronics", "Audio", "Headphones"), 49.0, 40, "true wireless in-ear earbuds with charging case"),
    ("p05", "JBL Flip portable bluetooth speaker", "JBL", ("Electronics", "Audio", "Speakers"), 99.0, 25, "waterproof speaker with deep bass"),
    ("p06", "Sonos One smart speaker", "Sonos", ("Electronics", "Audio", "Speakers"), 219.0, 3, "wifi speaker with voice assistant"),
    ("p07", "Bose SoundLink mini speaker", "Bose", ("Electronics", "Audio", "Speakers"), 129.0, 0, "compact bluetooth speaker with rich sound"),
    ("p08", "Lenovo ThinkPad X1 Carbon laptop", "Lenovo", ("Electronics", "Computers", "Laptops"), 1499.0, 4, "14 inch business laptop with a lightweight carbon chassis"),
    ("p09", "Apple MacBook Air 13 laptop", "Apple", ("Electronics", "Computers", "Laptops"), 1199.0, 10, "thin and light laptop with all-day battery"),
    ("p10", "Dell XPS 15 laptop", "Dell", ("Electronics", "Computers", "Laptops"), 1799.0, 0, "15 inch laptop with OLED display for creators"),
    ("p11", "Logitech MX Master wireless mouse", "Logitech", ("Electronics", "Computers", "Accessories"), 99.0, 30, "ergonomic mouse with fast scrolling"),
    ("p12", "Logitech K380 bluetooth keyboard", "Logitech", ("Electronics", "Computers", "Accessories"), 39.0, 50, "compact multi-device keyboard"),
    ("p13", "Anker USB-C hub 7-in-1", "Anker", ("Electronics", "Computers", "Accessories"), 35.0, 0, "hub with HDMI, USB ports and SD card reader"),
    ("p14", "Dell 27 inch 4K monitor", "Dell", ("Electronics", "Computers", "Accessories"), 399.0, 7, "IPS monitor with USB-C power delivery"),
    ("p15", "Le Creuset cast iron dutch oven", "Le Creuset", ("Home", "Kitchen", "Cookware"), 329.0, 6, "enamelled cast iron pot for slow cooking"),
    ("p16", "Tefal non-stick frying pan 28cm", "Tefal", ("Home", "Kitchen", "Cookware"), 29.0, 60, "non-stick pan for eggs and pancakes"),
    ("p17", "Lodge cast iron skillet", "Lodge", ("Home", "Kitchen", "Cookware"), 39.0, 0, "pre-seasoned skillet for searing steak"),
    ("p18", "Breville Barista Express espresso machine", "Breville", ("Home", "Kitchen", "Coffee"), 699.0, 2, "espresso machine with built-in grinder"),
    ("p19", "Hario V60 pour-over coffee dripper", "Hario", ("Home", "Kitchen", "Coffee"), 19.0, 100, "ceramic dripper for filter coffee"),
    ("p20", "Baratza Encore coffee grinder", "Baratza", ("Home", "Kitchen", "Coffee"), 149.0, 8, "conical burr grinder for drip and pour-over"),
    ("p21", "IKEA Poang armchair", "IKEA", ("Home", "Living", "Chairs"), 99.0, 15, "bentwood armchair with cushion"),
    ("p22", "Philips Hue white ambiance starter kit", "Philips", ("Home", "Living", "Lighting"), 129.0, 9, "smart light bulbs with bridge"),
    ("p23", "Nike Pegasus 40 running shoes", "Nike", ("Sports", "Running", "Shoes"), 129.0, 20, "neutral road running shoes with responsive foam"),
    ("p24", "Asics Gel-Kayano 30 running shoes", "Asics", ("Sports", "Running", "Shoes"), 159.0, 0, "stability running shoes for overpronation"),
    ("p25", "Hoka Speedgoat trail running shoes", "Hoka", ("Sports", "Running", "Shoes"), 149.0, 11, "trail shoes with a grippy outsole"),
    ("p26", "Nike Dri-FIT running shorts", "Nike", ("Sports", "Running", "Apparel"), 35.0, 45, "lightweight shorts with inner brief"),
    ("p27", "Adidas Own the Run jacket", "Adidas", ("Sports", "Running", "Apparel"), 70.0, 13, "windproof running jacket with reflective details"),
    ("p28", "MSR Hubba Hubba 2-person tent", "MSR", ("Sports", "Outdoor", "Camping"), 499.0, 3, "lightweight backpacking tent"),
    ("p29", "Therm-a-Rest sleeping pad", "Therm-a-Rest", ("Sports", "Outdoor", "Camping"), 189.0, 0, "insulated inflatable sleeping pad"),
    ("p30", "Petzl Actik headlamp", "Petzl", ("Sports", "Outdoor", "Camping"), 49.0, 22, "rechargeable headlamp with 450 lumens"),
]
# fmt: on
QUERIES = [
    "wireless headphones",
    "cast iron",
    "running shoes",
    "coffee grinder",
    "bluetooth speaker",
    "laptop",
    "XJ-9000",
    "usb-c monitor",
    "lightweight",
    "noise cancelling",
]


# -- fixtures and helpers ---------------------------------------------------------------------


def embed(text: str) -> np.ndarray:
    """Deterministic fake embedding: a seeded random vector per token, summed, L2-normalised."""
    v = np.zeros(DIM, dtype=np.float64)
    for token in re.findall(r"[a-z0-9]+", text.lower()):
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
        v += np.random.default_rng(seed).standard_normal(DIM)
    n = np.linalg.norm(v)
    return (v / n if n else v).astype(np.float32)


def text_of(row: tuple[Any, ...]) -> str:
    _, title, brand, path, _, _, desc = row
    return ". ".join([title, brand, " > ".join(path), desc])


def point(row: tuple[Any, ...]) -> ProductPoint:
    pid, title, brand, path, price, stock, _ = row
    payload: dict[str, Any] = {
        "product_id": pid,
        "title": title,
        "brand": brand,
        "category_path": list(path),
        "categories": list(path),
        "price": price,
        "currency": "EUR",
        "margin": 0.2,
        "stock": stock,
        "in_stock": 1 if stock > 0 else 0,
        "updated_at": 1_700_000_000_000,
        "content_hash": hashlib.sha256(text_of(row).encode()).hexdigest()[:32],
        "model_version": "fake-bow-32",
        "attributes": {"colour": "black"},
    }
    return ProductPoint(pid, embed(text_of(row)), text_of(row), payload)


def make(kind: str, where: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(where / "edge")
    return QdrantServerStore(QdrantClient(path=str(where / "qdrant")), collection_prefix="t_")


def load(store: VectorStore, tenant: str = TENANT, rows: list[tuple[Any, ...]] = CATALOGUE) -> VectorStore:
    store.ensure_collection(tenant, DIM)
    store.upsert(tenant, [point(r) for r in rows])
    return store


def ids(hits: list[Hit]) -> list[str]:
    return [h.product_id for h in hits]


def search(store: VectorStore, query: str, mode: str = "hybrid", tenant: str = TENANT, **kw: Any) -> list[Hit]:
    return store.search(tenant, embed(query), query, mode=mode, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[VectorStore]:
    s = make(kind, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def demo(store: VectorStore) -> VectorStore:
    """A store holding the 30-product catalogue for tenant ``demo``."""
    return load(store)


# -- writes ----------------------------------------------------------------------------------


def test_upsert_and_count(demo: VectorStore, kind: str) -> None:
    assert demo.backend == kind
    assert demo.count(TENANT) == len(CATALOGUE)
    got = demo.payloads(TENANT, ["p05", "nope", "p17"])
    assert set(got) == {"p05", "p17"}
    assert got["p17"]["title"] == "Lodge cast iron skillet" and got["p17"]["in_stock"] == 0
    assert got["p05"]["attributes"] == {"colour": "black"}


def test_ensure_collection_is_idempotent(demo: VectorStore) -> None:
    demo.ensure_collection(TENANT, DIM)
    demo.ensure_collection(TENANT, DIM)
    assert demo.count(TENANT) == len(CATALOGUE)


def test_reupsert_is_idempotent(demo: VectorStore) -> None:
    before = {q: search(demo, q) for q in QUERIES}
    demo.upsert(TENANT, [point(r) for r in CATALOGUE])
    demo.upsert(TENANT, [point(r) for r in CATALOGUE[:10]])
    assert demo.count(TENANT) == len(CATALOGUE)
    for q in QUERIES:
        after = search(demo, q)
        assert ids(after) == ids(before[q]), q
        # Fused scores are shares of 0..1: a re-upsert's float noise in the stage scores stays far below 1e-6.
        assert [h.score for h in after] == pytest.approx([h.score for h in before[q]], abs=1e-6), q


def test_set_payload_merges_without_touching_vectors(demo: VectorStore) -> None:
    def stage_scores() -> dict[str, dict[str, float]]:
        return {
            m: {h.product_id: h.score for h in search(demo, "cast iron skillet", mode=m)} for m in ("dense", "keyword")
        }

    before = stage_scores()
    demo.set_payload(TENANT, "p17", {"price": 25.0, "stock": 9, "in_stock": True})
    p = demo.payloads(TENANT, ["p17"])["p17"]
    assert (p["price"], p["stock"], p["in_stock"]) == (25.0, 9, 1)  # a bool flag is stored as 0/1
    assert p["title"] == "Lodge cast iron skillet" and p["brand"] == "Lodge"  # merged, not replaced
    after = stage_scores()
    for mode in ("dense", "keyword"):  # both vectors still there, unchanged
        assert after[mode] == pytest.approx(before[mode]), mode
    hit = search(demo, "pre-seasoned skillet", mode="dense")[0]
    assert hit.product_id == "p17" and hit.payload["price"] == 25.0
    in_range = search(
        demo, "cast iron", mode="dense", filter=SearchFilter(price_min=20.0, price_max=26.0, in_stock=True)
    )
    assert ids(in_range) == ["p17"]


def test_a_search_after_an_update_shows_the_new_payload(demo: VectorStore) -> None:
    # The first search fills the edge store's payload cache; each write must reach the next search.
    assert search(demo, "pre-seasoned skillet", mode="dense")[0].payload["price"] == 39.0
    row = next(r for r in CATALOGUE if r[0] == "p17")
    changed = point(row)
    changed.payload.update(title="Lodge cast iron skillet 26cm", price=44.0)
    demo.upsert(TENANT, [changed])
    hit = search(demo, "pre-seasoned skillet", mode="dense")[0]
    assert (hit.product_id, hit.payload["title"], hit.payload["price"]) == ("p17", "Lodge cast iron skillet 26cm", 44.0)
    demo.set_payload(TENANT, "p17", {"price": 41.0})
    assert search(demo, "pre-seasoned skillet", mode="dense")[0].payload["price"] == 41.0
    demo.delete(TENANT, ["p17"])
    assert "p17" not in ids(search(demo, "pre-seasoned skillet", mode="dense"))
    demo.upsert(TENANT, [point(row)])
    assert search(demo, "pre-seasoned skillet", mode="dense")[0].payload["price"] == 39.0


def test_edge_payload_cache_is_bounded_and_drops_a_fill_that_raced_a_write(tmp_path: Path) -> None:
    from models.store.edge import _PayloadCache

    store = load(EdgeStore(tmp_path / "edge", payload_cache=5))
    try:
        for q in QUERIES:
            reference = make("qdrant", tmp_path / q.replace(" ", "_"))
            try:
                assert ids(search(store, q)) == ids(search(load(reference), q)), q
            finally:
                reference.close()
        assert len(store._payloads._entries) <= 5
    finally:
        store.close()
    cache = _PayloadCache(10)
    read_at = cache.generation("demo")  # a search reads the engine here ...
    cache.invalidate("demo", ["k"])  # ... a write lands before it fills the cache
    cache.fill("demo", read_at, {"k": {"price": 1.0}})
    assert cache.get("demo", ["k"]) == ({}, ["k"])
    cache.fill("demo", cache.generation("demo"), {"k": {"price": 2.0}})
    assert cache.get("demo", ["k"]) == ({"k": {"price": 2.0}}, [])
    assert cache.get("other", ["k"]) == ({}, ["k"])  # tenants never share entries


#: Past Qdrant's indexing threshold (10 MB of vectors), below which optimizing builds no HNSW graph.
UNINDEXED = 7_000
MINILM_DIM = 384


def unit_vectors(n: int, dim: int, seed: int = 7) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_unindexed(store: EdgeStore, vectors: np.ndarray) -> None:
    store.ensure_collection(TENANT, vectors.shape[1])
    store.upsert(TENANT, [ProductPoint(f"p{i}", v, f"item {i}", {"price": 1.0}) for i, v in enumerate(vectors)])


def dense_indexed(shard_dir: Path, n: int) -> int:
    """Dense vectors in HNSW segments (sparse ones are always indexed: ``n`` of the engine's count)."""
    import qdrant_edge as qe

    shard = qe.EdgeShard.load(str(shard_dir))
    try:
        return int(shard.info().indexed_vectors_count) - n
    finally:
        shard.close()


def test_edge_builds_the_vector_index_of_new_vectors_when_asked_and_enough_came(tmp_path: Path) -> None:
    vectors = unit_vectors(UNINDEXED, MINILM_DIM)
    store = EdgeStore(tmp_path / "edge")
    write_unindexed(store, vectors)
    assert store.optimize_pending(UNINDEXED + 1) == []  # not enough new vectors yet
    assert store.optimize_pending(1000) == [TENANT]
    assert store.optimize_pending(1) == []  # counted afresh after each build
    assert ids(store.search(TENANT, vectors[42], "", limit=3, mode="dense"))[0] == "p42"
    store.close()
    assert dense_indexed(tmp_path / "edge" / TENANT, UNINDEXED) == UNINDEXED
    server = make("qdrant", tmp_path / "server")
    try:
        assert server.optimize_pending(1) == []  # the server indexes by itself
    finally:
        server.close()


def test_the_catalogue_agent_builds_the_index_once_the_catalogue_is_quiet(tmp_path: Path) -> None:
    import asyncio
    import time

    import faust

    from streams.catalogue import CataloguePipeline
    from streams.settings import Settings, StoreSettings

    store = EdgeStore(tmp_path / "edge")
    indexer = type("Indexer", (), {"store": store})()  # the agent reaches the store through its indexer
    settings = Settings(tenants=(TENANT,), store=StoreSettings(optimize_idle_s=0.3, optimize_min_points=1000))
    app = faust.App("index-builder-test", broker="kafka://127.0.0.1:1")
    pipeline = CataloguePipeline(app, settings, "127.0.0.1:1", lambda: indexer)
    assert "build_index_when_quiet" in [t.__name__ for t in app._app_tasks]  # started with the worker
    pipeline._indexer = indexer  # as after the first catalogue batch

    def written(vectors: np.ndarray) -> None:  # what a catalogue batch does (see CataloguePipeline._apply)
        write_unindexed(store, vectors)
        pipeline._last_write = time.monotonic()

    written(unit_vectors(10, MINILM_DIM))
    time.sleep(0.35)
    asyncio.run(pipeline.build_index_when_quiet())
    assert pipeline.stats.index_builds == 0  # quiet, but too few new products to be worth a pause
    written(unit_vectors(UNINDEXED, MINILM_DIM))
    asyncio.run(pipeline.build_index_when_quiet())
    assert pipeline.stats.index_builds == 0  # enough, but the catalogue is still busy
    time.sleep(0.35)
    pipeline._writing = True
    asyncio.run(pipeline.build_index_when_quiet())
    assert pipeline.stats.index_builds == 0  # a batch is being embedded
    pipeline._writing = False
    asyncio.run(pipeline.build_index_when_quiet())
    assert pipeline.stats.index_builds == 1 and pipeline.stats.last_index_build_s is not None
    asyncio.run(pipeline.build_index_when_quiet())
    assert pipeline.stats.index_builds == 1
    store.close()
    assert dense_indexed(tmp_path / "edge" / TENANT, UNINDEXED) == UNINDEXED


def test_the_worker_builds_the_vector_index_of_what_a_previous_run_left_unindexed(tmp_path: Path,
                                                                                     model_dir: Path) -> None:
    """Qdrant Edge never optimizes by itself: without this, every dense search scans every vector."""
    from streams.resources import Resources
    from streams.settings import ModelSettings, Settings, StoreSettings

    n = UNINDEXED
    vectors = unit_vectors(n, MINILM_DIM)
    root = tmp_path / "index"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "junk").write_text("not a shard")  # logged and left alone, start-up goes on
    first = EdgeStore(root)
    write_unindexed(first, vectors)
    first.close()
    assert dense_indexed(root / TENANT, n) == 0
    settings = Settings(models=ModelSettings(dir=model_dir.parent, embedder=model_dir.name),
                        store=StoreSettings(dir=root))
    res = Resources(settings)
    store = res.store
    assert isinstance(store, EdgeStore) and store.optimize_existing() == []  # done while opening
    hits = store.search(TENANT, vectors[123], "", limit=5, mode="dense")
    assert hits[0].product_id == "p123"
    res.close()
    assert dense_indexed(root / TENANT, n) == n


def test_set_payload_of_unknown_product_says_so(demo: VectorStore) -> None:
    with pytest.raises(PointNotFound, match="upsert it"):
        demo.set_payload(TENANT, "p99", {"price": 1.0})
    assert demo.count(TENANT) == len(CATALOGUE)


def test_delete(demo: VectorStore) -> None:
    demo.delete(TENANT, ["p01", "p17", "not-there"])
    demo.delete(TENANT, [])
    assert demo.count(TENANT) == len(CATALOGUE) - 2
    assert demo.payloads(TENANT, ["p01", "p17", "p02"]).keys() == {"p02"}
    for mode in ("hybrid", "dense", "keyword"):
        assert not {"p01", "p17"} & set(ids(search(demo, "XJ-9000 cast iron skillet", mode=mode)))


# -- filters ---------------------------------------------------------------------------------

FILTERS: list[tuple[SearchFilter, Callable[[tuple[Any, ...]], bool]]] = [
    (SearchFilter(category="Audio"), lambda r: "Audio" in r[3]),
    (SearchFilter(category="Coffee"), lambda r: "Coffee" in r[3]),
    (SearchFilter(brands=("Bose", "Logitech")), lambda r: r[2] in ("Bose", "Logitech")),
    (SearchFilter(price_min=40.0, price_max=130.0), lambda r: 40.0 <= r[4] <= 130.0),
    (SearchFilter(price_min=1000.0), lambda r: r[4] >= 1000.0),
    (SearchFilter(in_stock=True), lambda r: r[5] > 0),
    (SearchFilter(in_stock=False), lambda r: r[5] == 0),
    (
        SearchFilter(category="Electronics", brands=("Bose", "JBL", "Dell"), price_max=300.0, in_stock=True),
        lambda r: "Electronics" in r[3] and r[2] in ("Bose", "JBL", "Dell") and r[4] <= 300.0 and r[5] > 0,
    ),
    (SearchFilter(category="Nothing"), lambda r: False),
    (SearchFilter(product_ids=("p03", "p17", "p99")), lambda r: r[0] in ("p03", "p17")),
    (SearchFilter(product_ids=("p03", "p17"), in_stock=True), lambda r: r[0] == "p03"),
    (SearchFilter(product_ids=()), lambda r: False),
]


@pytest.mark.parametrize(("flt", "expected"), FILTERS, ids=[repr(f) for f, _ in FILTERS])
def test_filter_returns_exactly_matching_products(
    demo: VectorStore, flt: SearchFilter, expected: Callable[[tuple[Any, ...]], bool]
) -> None:
    want = {r[0] for r in CATALOGUE if expected(r)}
    # Dense retrieval ranks every point, so with a filter it returns exactly the matching set.
    assert set(ids(search(demo, "anything at all", mode="dense", filter=flt))) == want
    for mode in ("hybrid", "keyword"):
        assert set(ids(search(demo, "wireless running coffee", mode=mode, filter=flt))) <= want


# -- modes -----------------------------------------------------------------------------------


def test_search_hits_leave_the_embedded_text_out_and_payloads_keep_it(demo: VectorStore) -> None:
    pt = point(CATALOGUE[4])
    demo.upsert(TENANT, [ProductPoint(pt.product_id, pt.dense, pt.text, {**pt.payload, "text": pt.text})])
    hit = next(h for h in search(demo, CATALOGUE[4][1]) if h.product_id == pt.product_id)
    assert "text" not in hit.payload and hit.payload["title"] == CATALOGUE[4][1]
    assert hit.payload.keys() == pt.payload.keys()
    assert demo.payloads(TENANT, [pt.product_id])[pt.product_id]["text"] == pt.text  # what a hot swap reads


def test_rare_token_ranks_its_product_first(demo: VectorStore) -> None:
    for mode in ("keyword", "hybrid"):
        hits = search(demo, "XJ-9000", mode=mode)
        assert hits[0].product_id == "p01", mode
    assert ids(search(demo, "XJ-9000", mode="keyword")) == ["p01"]  # nothing else has those terms


def test_modes_rank_sensibly_and_report_stage_scores(demo: VectorStore) -> None:
    dense = search(demo, "pre-seasoned skillet", mode="dense", limit=5)
    assert dense[0].product_id == "p17" and len(dense) == 5
    assert all(h.scores.keys() == {"dense"} and h.score == h.scores["dense"] for h in dense)
    assert [h.score for h in dense] == sorted((h.score for h in dense), reverse=True)

    keyword = search(demo, "running shoes", mode="keyword", limit=3)
    assert {h.product_id for h in keyword} == {"p23", "p24", "p25"}
    assert all(h.scores.keys() == {"bm25"} and h.score == h.scores["bm25"] for h in keyword)

    hybrid = search(demo, "coffee grinder")
    assert hybrid[0].product_id == "p20"  # first in both stages
    assert hybrid[0].scores.keys() == {"dense", "bm25", "fused"}
    assert hybrid[0].score == hybrid[0].scores["fused"] == pytest.approx(1.0)  # each stage's best: 0.5 + 0.5
    assert all("fused" in h.scores and h.scores.keys() - {"fused"} for h in hybrid)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    assert len(hybrid) == len(CATALOGUE)  # dense stage ranks everything, limit 100 > 30


def test_hybrid_falls_back_to_the_stage_it_has_input_for(demo: VectorStore) -> None:
    no_text = demo.search(TENANT, embed("pre-seasoned skillet"), "", mode="hybrid", limit=3)
    assert no_text[0].product_id == "p17" and all(h.scores.keys() == {"dense"} for h in no_text)
    stopwords = demo.search(TENANT, embed("pre-seasoned skillet"), "the and of", mode="hybrid", limit=3)
    assert ids(stopwords) == ids(no_text)
    no_vector = demo.search(TENANT, None, "skillet", mode="hybrid")
    assert ids(no_vector) == ["p17"] and no_vector[0].scores.keys() == {"bm25"}
    assert demo.search(TENANT, None, "", mode="hybrid") == []
    assert demo.search(TENANT, None, "skillet", mode="keyword", limit=0) == []
    with pytest.raises(InvalidRequest, match="needs a query vector"):
        demo.search(TENANT, None, "skillet", mode="dense")


# -- isolation, errors ----------------------------------------------------------------------


def test_tenants_are_isolated(demo: VectorStore) -> None:
    acme = [
        ("p01", "Acme XJ-9000 rocket skates", "Acme", ("Toys", "Outdoor"), 10.0, 1, "roller skates with rockets"),
        ("a02", "Acme anvil", "Acme", ("Tools",), 99.0, 1, "heavy anvil, drops well"),
    ]
    load(demo, "acme", acme)
    assert demo.count("acme") == 2 and demo.count(TENANT) == len(CATALOGUE)
    assert point_id("acme", "p01") != point_id(TENANT, "p01")
    assert demo.payloads("acme", ["p01"])["p01"]["title"] == "Acme XJ-9000 rocket skates"
    assert demo.payloads(TENANT, ["p01"])["p01"]["brand"] == "Sony"
    for mode in ("hybrid", "dense", "keyword"):
        assert "a02" not in ids(search(demo, "anvil rocket skates", mode=mode))
        assert set(ids(search(demo, "headphones anvil", mode=mode, tenant="acme"))) <= {"p01", "a02"}
        assert all(h.payload["brand"] != "Acme" for h in search(demo, "Acme XJ-9000", mode=mode))
    demo.delete("acme", ["p01"])
    assert demo.count(TENANT) == len(CATALOGUE) and "p01" in demo.payloads(TENANT, ["p01"])


def test_unknown_tenant_says_what_to_do(store: VectorStore) -> None:
    for call in (
        lambda: store.count("ghost"),
        lambda: store.search("ghost", embed("x"), "x"),
        lambda: store.payloads("ghost", ["p01"]),
        lambda: store.upsert("ghost", [point(CATALOGUE[0])]),
    ):
        with pytest.raises(CollectionNotFound, match="no collection for tenant 'ghost' — index its catalogue first"):
            call()


def test_bad_tenant_id_and_dimensions_are_rejected(demo: VectorStore) -> None:
    with pytest.raises(InvalidRequest, match="tenant id"):
        demo.ensure_collection("../etc", DIM)
    with pytest.raises(DimensionMismatch):
        demo.ensure_collection(TENANT, DIM * 2)
    demo.ensure_collection(TENANT, DIM)
    bad = ProductPoint("p99", np.ones(DIM + 1, dtype=np.float32), "odd", {"price": 1.0})
    with pytest.raises(DimensionMismatch):
        demo.upsert(TENANT, [bad])
    with pytest.raises(DimensionMismatch):
        demo.search(TENANT, np.ones(DIM + 1, dtype=np.float32), "x", mode="dense")
    assert demo.count(TENANT) == len(CATALOGUE)


def test_errors_belong_to_the_model_layer() -> None:
    from models.exceptions import ModelError
    from schemas.exceptions import ShoprankError

    assert issubclass(StoreError, ModelError) and issubclass(StoreError, ShoprankError)
    assert issubclass(CollectionNotFound, LookupError) and issubclass(DimensionMismatch, ValueError)


# -- persistence -----------------------------------------------------------------------------


def test_survives_close_and_reopen(kind: str, tmp_path: Path) -> None:
    first = load(make(kind, tmp_path))
    first.set_payload(TENANT, "p05", {"price": 79.0})
    first.delete(TENANT, ["p30"])
    expected = {q: ids(search(first, q)) for q in QUERIES}
    first.flush()
    first.close()

    again = make(kind, tmp_path)
    try:
        assert again.count(TENANT) == len(CATALOGUE) - 1
        assert again.payloads(TENANT, ["p05"])["p05"]["price"] == 79.0
        for q in QUERIES:
            assert ids(search(again, q)) == expected[q], q
        again.ensure_collection(TENANT, DIM)  # reopening through ensure_collection keeps the data
        assert again.count(TENANT) == len(CATALOGUE) - 1
    finally:
        again.close()


def test_edge_writes_survive_a_killed_process(tmp_path: Path) -> None:
    """Acknowledged upserts are in the WAL: no flush or close needed to find them again."""
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from pathlib import Path
        from models.store import EdgeStore, ProductPoint
        s = EdgeStore(Path({str(tmp_path)!r}))
        s.ensure_collection("demo", 4)
        s.upsert("demo", [ProductPoint(f"k{{i}}", np.eye(4, dtype=np.float32)[i], f"kill test {{i}}", {{}}) for i in range(4)])
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
    store = EdgeStore(tmp_path)
    try:
        assert store.count("demo") == 4
        assert store.search("demo", np.eye(4, dtype=np.float32)[2], "", limit=1)[0].product_id == "k2"
    finally:
        store.close()


def test_edge_shard_has_one_opener(tmp_path: Path) -> None:
    first = load(EdgeStore(tmp_path))
    second = EdgeStore(tmp_path)
    try:
        with pytest.raises(StoreError, match="already open"):
            second.count(TENANT)
        first.close()
        assert second.count(TENANT) == len(CATALOGUE)  # free once the first one closed it
    finally:
        first.close()
        second.close()


# -- congruence between backends -------------------------------------------------------------


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[VectorStore, VectorStore]]:
    edge, server = load(make("edge", tmp_path)), load(make("qdrant", tmp_path))
    try:
        yield edge, server
    finally:
        edge.close()
        server.close()


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_backends_agree(both: tuple[VectorStore, VectorStore], mode: str) -> None:
    edge, server = both
    for q in QUERIES:
        for flt in (None, SearchFilter(in_stock=True), SearchFilter(category="Electronics", price_max=400.0)):
            a, b = search(edge, q, mode=mode, filter=flt, limit=5), search(server, q, mode=mode, filter=flt, limit=5)
            assert ids(a) == ids(b), (q, flt)
            if mode == "dense":
                assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5), q


# -- pieces ----------------------------------------------------------------------------------


def test_rrf_ties_break_by_best_rank_then_id() -> None:
    dense = [Scored("a", 0.9), Scored("c", 0.8), Scored("b", 0.8)]
    bm25 = [Scored("c", 3.0), Scored("d", 2.0)]
    ranked = rank({"dense": dense, "bm25": bm25}, limit=10, fusion=Fusion("rrf"))
    # dense ranks b before c (equal scores, by id); c: 1/63 + 1/61; b and d tie on score and best rank
    assert [r.key for r in ranked] == ["c", "a", "b", "d"]
    assert ranked[0].scores == {"dense": 0.8, "bm25": 3.0, "fused": pytest.approx(1 / 63 + 1 / 61)}
    assert ranked[1].scores == {"dense": 0.9, "fused": pytest.approx(1 / 61)}
    assert [r.key for r in rank({"bm25": bm25}, limit=1)] == ["c"]
    assert rrf({"x": ["a"]}) == {"a": 1 / 61}
    hits = to_hits(ranked, {"a": {"product_id": "A"}, "c": {"product_id": "C"}})  # b, d: deleted meanwhile
    assert [(h.product_id, h.score) for h in hits] == [("C", ranked[0].score), ("A", ranked[1].score)]


def test_relative_fusion_keeps_how_far_ahead_a_stage_is() -> None:
    # b is a close second in both stages; a and c each win one stage by a little and lose the other badly.
    dense = [Scored("a", 0.9), Scored("b", 0.85), Scored("c", 0.1)]
    bm25 = [Scored("c", 5.0), Scored("b", 4.8), Scored("a", 0.1)]
    stages = {"dense": dense, "bm25": bm25}
    assert [r.key for r in rank(stages, limit=3, fusion=Fusion("rrf"))] == ["a", "c", "b"]  # ranks only
    ranked = rank(stages, limit=3)  # the default: relative, equal weights
    assert [r.key for r in ranked] == ["b", "a", "c"]  # a and c tie at 0.5: best rank, then id
    assert ranked[0].scores == {"dense": 0.85, "bm25": 4.8,
                                "fused": pytest.approx(0.5 * 0.75 / 0.8 + 0.5 * 4.7 / 4.9)}
    assert ranked[1].scores == {"dense": 0.9, "bm25": 0.1, "fused": pytest.approx(0.5)}
    # the weight moves the ranking toward one stage, all the way at 0 and 1
    assert [r.key for r in rank(stages, limit=3, fusion=Fusion(dense_weight=1.0))] == ["a", "b", "c"]
    assert [r.key for r in rank(stages, limit=3, fusion=Fusion(dense_weight=0.0))] == ["c", "b", "a"]
    # a product only one stage returned gets nothing from the other; a stage of equal scores gives each 1
    only = rank({"dense": [Scored("x", 0.5)], "bm25": [Scored("y", 2.0), Scored("z", 2.0)]}, limit=3)
    assert [(r.key, r.score) for r in only] == [("x", 0.5), ("y", 0.5), ("z", 0.5)]
    # A BM25 stage that returned fewer than it was asked for matched nothing else: its scores count from 0,
    # so its last match still beats a product without any query term (from its own lowest score, it did not).
    few = {"dense": [Scored("x", 0.9), Scored("y", 0.8), Scored("z", 0.1)],
           "bm25": [Scored("y", 3.0), Scored("z", 2.0)]}
    keyword_only = Fusion(dense_weight=0.0)
    assert [r.key for r in rank(few, limit=3, fusion=keyword_only, candidates=10)] == ["y", "z", "x"]
    assert [r.key for r in rank(few, limit=3, fusion=keyword_only, candidates=2)] == ["y", "x", "z"]  # a full list
    with pytest.raises(InvalidRequest, match="rrf"):
        Fusion("linear")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="0 to 1"):
        Fusion(dense_weight=1.5)


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_the_store_fuses_as_its_settings_say(kind: str, tmp_path: Path) -> None:
    from streams.resources import Resources
    from streams.settings import Settings, StoreSettings

    configured = Resources(Settings(store=StoreSettings(kind=kind, dir=tmp_path, url=":memory:", fusion="rrf")))
    default = Resources(Settings(store=StoreSettings(kind=kind, dir=tmp_path / "d", url=":memory:",
                                                     dense_weight=0.3)))
    try:
        assert configured.store.fusion == Fusion("rrf")  # type: ignore[attr-defined]
        assert default.store.fusion == Fusion("relative", 0.3)  # type: ignore[attr-defined]
        for store in (configured.store, default.store):
            store.ensure_collection(TENANT, DIM)
            store.upsert(TENANT, [point(r) for r in CATALOGUE])
        rrf_first = configured.store.search(TENANT, embed("coffee grinder"), "coffee grinder", limit=1)[0]
        assert rrf_first.product_id == "p20" and rrf_first.score == pytest.approx(2 / 61)
        # a store's fusion can be overridden per search (shoprank eval compares both)
        again = default.store.search(TENANT, embed("coffee grinder"), "coffee grinder", limit=1, fusion=Fusion("rrf"))
        assert again[0].score == pytest.approx(2 / 61)
    finally:
        configured.close()
        default.close()
    with pytest.raises(ValueError, match="dense_weight"):
        StoreSettings(dense_weight=2.0)


def test_open_store(tmp_path: Path) -> None:
    edge = open_store("edge", root=tmp_path / "idx")
    assert isinstance(edge, EdgeStore) and edge.backend == "edge"
    edge.close()
    mem = open_store("qdrant", url=":memory:", collection_prefix="x_")
    assert isinstance(mem, QdrantServerStore) and mem.collection("demo") == "x_shoprank_demo"
    mem.close()
    with pytest.raises(InvalidRequest, match="SHOPRANK_STORE_DIR"):
        open_store("edge")
    with pytest.raises(InvalidRequest, match="SHOPRANK_STORE_URL"):
        open_store("qdrant")
    with pytest.raises(InvalidRequest, match="SHOPRANK_STORE_KIND"):
        open_store("rocksdb")  # type: ignore[arg-type]


def test_store_does_not_import_streams() -> None:
    code = "import sys, models.store; sys.exit(any(m.split('.')[0] == 'streams' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, timeout=120).returncode == 0


# -- smaller vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_binary_quantised_collections_answer_like_float_ones_and_scroll_and_drop(kind: str, tmp_path: Path) -> None:
    plain = make(kind, tmp_path / "plain")
    if kind == "edge":
        binary: VectorStore = EdgeStore(tmp_path / "binary" / "edge", quantization="binary")
    else:
        binary = QdrantServerStore(QdrantClient(path=str(tmp_path / "binary")), collection_prefix="t_",
                                   quantization="binary")
    try:
        for s in (plain, binary):
            load(s)
            if isinstance(s, EdgeStore):
                s.optimize(TENANT)  # builds the quantised copy
        for query in QUERIES[:5]:
            assert ids(search(binary, query, "dense"))[:3] == ids(search(plain, query, "dense"))[:3]
        pages, offset = [], None
        while True:
            page, offset = binary.scroll(TENANT, offset, 7)
            pages.append(page)
            if offset is None:
                break
        assert sorted(p["product_id"] for page in pages for p in page) == sorted(r[0] for r in CATALOGUE)
        binary.drop(TENANT)
        with pytest.raises(CollectionNotFound):
            binary.count(TENANT)
    finally:
        plain.close()
        binary.close()
