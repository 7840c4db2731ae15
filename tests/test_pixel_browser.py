"""The JavaScript pixel in headless Chromium, against a real gateway, broker, model and store.

A shop page on its own origin searches through the gateway, shows the results, and the shopper
clicks one, adds it to the cart on the product page and buys it at checkout. The pixel topic must
then hold exactly those four events, under the search's search_id, and attribution must credit the
purchase to that search. Nothing is sent before consent.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import AttributedInteraction, PixelEvent, decode
from streams.broker import EmbeddedBroker
from streams.kafka import read_topic
from streams.keys import create_key
from streams.supervise import free_port
from tests.test_search import PRODUCTS, product, send_updates, wait_stats

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# CI installs Chromium (.ci/run) and sets this, so there the test can never skip silently.
if not os.path.exists(CHROMIUM):
    if os.environ.get("SHOPRANK_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

# Flags of a browser on a closed network: no background connections, no sandbox (runs as root in CI).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

RESULTS = """<!doctype html><meta charset="utf-8"><title>results</title>
<script src="{gw}/v1/pixel.js" data-key="{key}" data-tenant="demo"></script>
<button id="consent" onclick="shoprank.consent(true); search()">Accept</button><ul id="list"></ul>
<script>
window.beforeConsent = shoprank.results("not-consented", ["p1"]);
async function search() {{
  const who = shoprank.ids();
  const r = await fetch("{gw}/v1/search", {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{tenant: "demo", query: "running shoes", page_size: 5, ...who}})}});
  const res = await r.json();
  window.result = res;
  shoprank.results(res.search_id, res.items.map(i => i.product_id));
  document.getElementById("list").innerHTML = res.items.map((it, i) =>
    `<li><a id="r${{i}}" href="product.html?id=${{it.product_id}}&price=${{it.price}}"
      onclick="shoprank.click('${{res.search_id}}', '${{it.product_id}}', ${{i}})">${{it.title}}</a></li>`).join("");
}}
</script>"""

PRODUCT = """<!doctype html><meta charset="utf-8"><title>product</title>
<script src="{gw}/v1/pixel.js" data-key="{key}" data-tenant="demo"></script>
<script>const q = new URLSearchParams(location.search), pid = q.get("id"), price = +q.get("price");</script>
<button id="cart" onclick="shoprank.addToCart(pid, price, 'EUR'); location.href = 'checkout.html?' + q">Add</button>"""

CHECKOUT = """<!doctype html><meta charset="utf-8"><title>checkout</title>
<script src="{gw}/v1/pixel.js" data-key="{key}" data-tenant="demo"></script>
<script>const q = new URLSearchParams(location.search), pid = q.get("id"), price = +q.get("price");</script>
<button id="buy" onclick="shoprank.purchase([{{product_id: pid, price: price, quantity: 1}}], 'EUR');
  shoprank.flush(); document.title = 'bought'">Buy</button>"""


@pytest.fixture
def shop_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static shop on its own origin (another port), as a real shop's pages would be."""
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", site
    finally:
        server.shutdown()
        server.server_close()


def read_all(broker: EmbeddedBroker, topic: str, idle_s: float = 2.0) -> list[bytes]:
    async def go() -> list[bytes]:
        return [v async for _, _, _, v, _ in read_topic(broker.bootstrap, topic, idle_timeout_s=idle_s) if v]

    return asyncio.run(go())


def wait_for(fetch: Any, want: int, timeout_s: float = 30) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    got: list[Any] = []
    while time.monotonic() < deadline:
        got = fetch()
        if len(got) >= want:
            return got
        time.sleep(0.3)
    return got


def test_a_page_that_searches_clicks_and_buys_produces_exactly_its_events(
    broker: EmbeddedBroker, prefix: str, make_worker: Any, tmp_path: Path, shop_site: tuple[str, Path]
) -> None:
    origin, site = shop_site
    keyfile = tmp_path / "keys.json"
    _, key = create_key(keyfile, "demo", "write", (origin,))
    worker = make_worker(prefix, app_id=f"pixel-{uuid.uuid4().hex[:6]}", extra_env={
        "SHOPRANK_SECURITY_KEYS_FILE": str(keyfile), "SHOPRANK_ATTRIBUTION_SWEEP_INTERVAL_S": "0.5",
        "SHOPRANK_RANKER_EXPLORE_SLOTS": "",
    })
    send_updates(broker, prefix, [product(*p) for p in PRODUCTS])
    wait_stats(worker, embedded=len(PRODUCTS))
    for name, page in (("results", RESULTS), ("product", PRODUCT), ("checkout", CHECKOUT)):
        (site / f"{name}.html").write_text(page.format(gw=worker.url, key=key))

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_context().new_page()
            page.goto(f"{origin}/results.html")
            assert page.evaluate("window.beforeConsent") is False
            page.click("#consent")
            page.wait_for_selector("#r0")
            result = page.evaluate("window.result")
            page.click("#r0")  # the click event leaves with the page, by sendBeacon
            page.wait_for_url("**/product.html*")
            page.click("#cart")
            page.wait_for_url("**/checkout.html*")
            page.click("#buy")
            page.wait_for_function("document.title === 'bought'")
        finally:
            browser.close()

    pixel_topic = f"{prefix}shoprank.pixel"
    events = [decode(PixelEvent, v) for v in wait_for(lambda: read_all(broker, pixel_topic), 4)]
    time.sleep(1.5)  # anything retried or sent twice would show up now
    events = sorted((decode(PixelEvent, v) for v in read_all(broker, pixel_topic)), key=lambda e: e.client_ts)
    first = result["items"][0]
    sid = result["search_id"]
    assert [e.type for e in events] == ["impression", "click", "add_to_cart", "purchase"]
    assert len({e.event_id for e in events}) == 4
    assert all(e.search_id == sid for e in events), [e.search_id for e in events]
    assert events[0].items == [i["product_id"] for i in result["items"]]
    assert all(e.product_id == first["product_id"] and e.position == 0 for e in events[1:])
    assert events[3].value == pytest.approx(first["price"]) and events[3].currency == "EUR"
    assert len({e.session_id for e in events}) == 1 and len({e.user_id for e in events}) == 1
    assert events[0].user_id.startswith("h:")  # the collector never publishes the browser's id
    assert all(e.page_url and e.page_url.startswith(origin) for e in events)

    interactions = wait_for(lambda: [decode(AttributedInteraction, v) for v in
                                     read_all(broker, f"{prefix}shoprank.interactions", idle_s=1)], 4)
    outcomes = {i.outcome: i for i in interactions}
    assert set(outcomes) == {"impression", "click", "add_to_cart", "purchase"}, interactions
    assert outcomes["purchase"].search_id == sid and outcomes["purchase"].product_id == first["product_id"]
