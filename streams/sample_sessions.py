"""Seeded shopper sessions for the learning loop, with the totals they must produce.

Each session searches one to three times; each search is logged (as the search agent would) and its
results page shown (an impression of ``page`` items); shoppers click some items, put some in the cart
and buy some, every event carrying the ``search_id``. A few events are sent twice, as a pixel retry
would. Used by the crash tests and the throughput benchmark, where the exact totals are the oracle.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from models.ranker.features import FEATURES
from schemas import LoggedItem, PixelEvent, SearchLog, encode
from schemas.topics import TOPICS

__all__ = ["SessionTraffic", "session_traffic"]


@dataclass
class SessionTraffic:
    #: (logical topic, key, value) in the order a live shop would produce them.
    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    #: Unique valid pixel events per tenant and type (what the pixel counts must reach).
    pixel_counts: dict[str, Counter[str]] = field(default_factory=dict)
    #: Learning-bucket totals per tenant (what the analytics must reach).
    totals: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def pixel_events(self) -> int:
        return sum(1 for topic, _, _ in self.messages if topic == "pixel")


def session_traffic(sessions: int, *, tenants: tuple[str, ...] = ("demo",), page: int = 10, seed: int = 5,
                    products: int = 200, retry_share: float = 0.02, ranker_features: bool = False) -> SessionTraffic:
    """``ranker_features``: each logged item carries the ranker's features, all of them and in full
    precision, as the search agent logs them (the default is two, which keeps the tests' traffic light)."""
    rng = random.Random(seed)
    out = SessionTraffic()

    def features(rng: random.Random) -> dict[str, float]:
        # The margin rate sets the margin totals; the other values only travel (and are learned from).
        if not ranker_features:
            return {"dense": round(rng.random(), 3), "margin_rate": 0.25}
        return {**{name: rng.random() for name in FEATURES}, "dense": round(rng.random(), 3), "margin_rate": 0.25}

    now = int(time.time() * 1000)
    for s in range(sessions):
        tenant = tenants[s % len(tenants)]
        session_id = f"sess-{seed}-{s}"
        user_id = f"user-{seed}-{s % max(1, sessions // 3)}"
        totals = out.totals.setdefault(tenant, Counter())
        counts = out.pixel_counts.setdefault(tenant, Counter())
        key = TOPICS["pixel"].key({"tenant": tenant, "session_id": session_id})
        assert key is not None
        kb = key.encode()
        t = now - rng.randint(0, 60_000)

        def emit(ev: PixelEvent, kb: bytes = kb, counts: Counter[str] = counts) -> None:
            out.messages.append(("pixel", kb, encode(ev)))
            counts[ev.type] += 1
            if rng.random() < retry_share:
                out.messages.append(("pixel", kb, encode(ev)))  # a retry: same event id, counted once

        n_searches = rng.randint(1, 3)
        # Disjoint pages within a session: a purchase then has exactly one search to credit.
        pool = rng.sample(range(products), page * n_searches)
        for k in range(n_searches):
            t += rng.randint(100, 2_000)
            sid = uuid.UUID(int=rng.getrandbits(128)).hex
            shown = pool[k * page:(k + 1) * page]
            items = [LoggedItem(product_id=f"p{p}", position=i, features=features(rng)) for i, p in enumerate(shown)]
            log = SearchLog(search_id=sid, tenant=tenant, session_id=session_id, query=f"query {shown[0] % 17}",
                            items=items, answered_at=t)
            out.messages.append(("searches", kb, encode(log)))

            def event(etype: str, **kw: object) -> PixelEvent:
                nonlocal t
                t += rng.randint(50, 3_000)
                return PixelEvent(event_id=uuid.UUID(int=rng.getrandbits(128)).hex, tenant=tenant,
                                  type=etype, user_id=user_id, session_id=session_id,  # type: ignore[arg-type]
                                  client_ts=t, server_ts=t, search_id=sid, **kw)  # type: ignore[arg-type]

            emit(event("impression", items=[it.product_id for it in items]))
            totals["searches"] += 1
            converted = False
            for pos in sorted(rng.sample(range(page), rng.choice((0, 0, 1, 1, 2)))):
                pid = items[pos].product_id
                emit(event("click", product_id=pid, position=pos))
                totals["clicks"] += 1
                if rng.random() < 0.4:
                    price = float(rng.randint(5, 200))
                    emit(event("add_to_cart", product_id=pid, quantity=1, price=price, currency="EUR"))
                    totals["carts"] += 1
                    if rng.random() < 0.6:
                        emit(event("purchase", product_id=pid, quantity=1, price=price, value=price, currency="EUR"))
                        totals["purchases"] += 1
                        totals["revenue"] += int(price)
                        converted = True
            if converted:
                totals["converted_searches"] += 1
    return out
