"""Per-search attribution: credit each click, add-to-cart and purchase to the search that produced it.

Pure logic over one session's state (a JSON-able dict, so the pixel agent keeps it in a Faust table
keyed ``tenant:session_id``, the same key as the pixel and searches topics). No Kafka here.

How an outcome finds its search, in order:

1. ``search_id`` carried by the event (the pixel copies it from the results page to product and cart
   pages): ``attributed_by="search_id"``.
2. A purchase is credited to every search of the session whose *click* led to that product within
   the window, split equally (``credit``); an add-to-cart to the latest such search:
   ``attributed_by="click_chain"``.
3. Otherwise the session's latest search that showed the product within the window:
   ``attributed_by="session_window"``.

The searches topic and the pixel topic are read by one consumer but are two topics, so a click can
arrive before the log of the search it names. Such an event waits in the session (``pending``): when
its search arrives it is attributed; when ``late_grace_ms`` has passed on the worker's clock since it
was parked, it falls back to rules 2–3 or is reported unattributed. The grace is worker time, not event
time, because a worker catching up on a backlog (after a restart, behind a burst) handles events long
after they happened, with their searches right behind them in the other topic; the agent also holds
the grace back until the searches partition is read to its end (streams.attribution_stage). The window
is event time (a search is forgotten once the session's newest event is ``window_ms`` past it) and
idleness worker time (a session untouched for ``window_ms`` is dropped), so a replay attributes what
a live run did. Interaction ids derive from the source event id, so a replayed event yields the same
ids and the learner downstream drops the repeat. A results page shown becomes one ``impression``
interaction listing its items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import AttributedInteraction, LoggedItem, PixelEvent, SearchLog, validate

__all__ = ["AttributionConfig", "Attributor", "Attributed", "user_hasher", "new_session"]

Session = dict[str, Any]


@dataclass(frozen=True)
class AttributionConfig:
    window_ms: int = 30 * 60 * 1000
    late_grace_ms: int = 30 * 1000
    max_searches: int = 20
    max_pending: int = 200


@dataclass
class Attributed:
    """What one step produced: interactions to emit and events no search could be found for."""

    interactions: list[AttributedInteraction] = field(default_factory=list)
    unattributed: list[tuple[PixelEvent, str]] = field(default_factory=list)

    def extend(self, other: Attributed) -> None:
        self.interactions.extend(other.interactions)
        self.unattributed.extend(other.unattributed)


def new_session() -> Session:
    # last_ts: the newest event time seen; seen: the worker's clock when the session was last touched.
    return {"searches": {}, "clicks": {}, "pending": [], "last_ts": 0, "seen": 0}


def user_hasher(secret: str) -> Callable[[str | None], str | None]:
    """Keyed BLAKE2b of user ids: stored and emitted instead of the id itself."""
    key = hashlib.blake2b(secret.encode(), digest_size=32).digest()

    def hash_user(user_id: str | None) -> str | None:
        if user_id is None:
            return None
        return hashlib.blake2b(user_id.encode(), key=key, digest_size=16).hexdigest()

    return hash_user


def _event_ts(ev: PixelEvent) -> int:
    return ev.server_ts if ev.server_ts is not None else ev.client_ts


def _last_touched(state: Session) -> int:
    seen = state.get("seen")  # absent from sessions written before it was kept
    return int(state["last_ts"] if seen is None else seen)


def _touch(state: Session, now_ms: int) -> None:
    state["seen"] = max(state.get("seen", 0), now_ms)


class Attributor:
    def __init__(self, config: AttributionConfig, hash_user: Callable[[str | None], str | None]) -> None:
        self.config = config
        self.hash_user = hash_user

    # -- inputs ---------------------------------------------------------------------------------

    def add_search(self, state: Session, log: SearchLog, now_ms: int | None = None) -> Attributed:
        """Remember what a search showed; attribute events that were waiting for it.

        ``now_ms``: the worker's clock as it handles the log (default: the log's own time).
        """
        _touch(state, log.answered_at if now_ms is None else now_ms)
        searches: dict[str, Any] = state["searches"]
        searches[log.search_id] = {
            "q": log.query,
            "ts": log.answered_at,
            "b": log.bucket,
            "rv": log.ranker_version,
            "items": {it.product_id: [it.position, it.features, it.explored] for it in log.items},
        }
        if len(searches) > self.config.max_searches:  # oldest first out
            for sid in sorted(searches, key=lambda s: searches[s]["ts"])[: len(searches) - self.config.max_searches]:
                del searches[sid]
        state["last_ts"] = max(state["last_ts"], log.answered_at)
        out = Attributed()
        waiting = [p for p in state["pending"] if p["event"].get("search_id") == log.search_id]
        if waiting:
            state["pending"] = [p for p in state["pending"] if p["event"].get("search_id") != log.search_id]
            for p in sorted(waiting, key=lambda p: p["event"]["client_ts"]):
                out.extend(self._attribute(state, validate(PixelEvent, p["event"]), park_at=None))
        return out

    def add_event(self, state: Session, ev: PixelEvent, now_ms: int | None = None) -> Attributed:
        """Attribute one validated, deduplicated pixel event (or park it until its search arrives).

        ``now_ms``: the worker's clock as it handles the event (default: the event's own time); a parked
        event waits ``late_grace_ms`` from then.
        """
        state["last_ts"] = max(state["last_ts"], _event_ts(ev))
        now = _event_ts(ev) if now_ms is None else now_ms
        _touch(state, now)
        return self._attribute(state, ev, park_at=now)

    def expire(self, state: Session, now_ms: int, *, settle: bool = True) -> Attributed:
        """Settle events whose grace ran out (worker clock ``now_ms``; not when ``settle`` is false: the
        searches they wait for may still be in the backlog); forget searches and clicks that are more than
        the window older than the session's newest event."""
        out = Attributed()
        due = [p for p in state["pending"] if settle and now_ms - p["since"] >= self.config.late_grace_ms]
        if due:
            state["pending"] = [p for p in state["pending"] if now_ms - p["since"] < self.config.late_grace_ms]
            for p in due:
                out.extend(self._attribute(state, validate(PixelEvent, p["event"]), park_at=None))
        horizon = state["last_ts"] - self.config.window_ms
        state["searches"] = {s: v for s, v in state["searches"].items() if v["ts"] >= horizon}
        state["clicks"] = {
            pid: kept for pid, cs in state["clicks"].items() if (kept := [c for c in cs if c[1] >= horizon])
        }
        return out

    @staticmethod
    def is_idle(state: Session, now_ms: int, window_ms: int) -> bool:
        """Nothing waits and the worker has not touched the session for ``window_ms`` (its clock)."""
        return not state["pending"] and now_ms - _last_touched(state) > window_ms

    def next_due(self, state: Session, now_ms: int, *, settle: bool = True) -> int:
        """The worker time from which :meth:`expire` or :meth:`is_idle` has something to do with a
        session that nothing else touches meanwhile (``settle`` as for :meth:`expire`)."""
        if state["pending"]:
            if not settle:  # its searches may still be in the backlog: look again at once
                return now_ms
            return min(p["since"] for p in state["pending"]) + self.config.late_grace_ms
        return _last_touched(state) + self.config.window_ms + 1

    # -- attribution ----------------------------------------------------------------------------

    def _attribute(self, state: Session, ev: PixelEvent, *, park_at: int | None) -> Attributed:
        """Credit ``ev``; one naming a search not seen yet is parked at ``park_at`` (None: settle it now)."""
        out = Attributed()
        if ev.type == "page_view":
            return out
        searches = state["searches"]
        sid = ev.search_id
        if sid is not None and sid not in searches and park_at is not None:
            self._park(state, ev, park_at)
            return out
        ts = _event_ts(ev)
        if ev.type == "impression":
            if sid is None or sid not in searches:
                out.unattributed.append((ev, "unknown_search" if sid else "no_search_id"))
                return out
            out.interactions.append(self._impression(ev, sid, searches[sid]))
            return out
        pid = ev.product_id
        assert pid is not None  # the contract requires it for click, add_to_cart and purchase
        credits: list[tuple[str, float, str]]  # (search_id, credit, attributed_by)
        clicked = self._clicked_searches(state, pid, ts)
        if ev.type == "click":
            found = sid if sid in searches else self._last_showing(state, pid, ts)
            credits = [(found, 1.0, "search_id" if found == sid else "session_window")] if found else []
            if found:
                state["clicks"].setdefault(pid, []).append([found, ts])
        elif ev.type == "add_to_cart":
            if sid is not None and sid in searches:
                credits = [(sid, 1.0, "search_id")]
            elif clicked:
                credits = [(clicked[-1], 1.0, "click_chain")]
            else:
                found = self._last_showing(state, pid, ts)
                credits = [(found, 1.0, "session_window")] if found else []
        else:  # purchase: every search whose click led to the product shares the credit
            if clicked:
                share = 1.0 / len(clicked)
                credits = [(s, share, "search_id" if s == sid and len(clicked) == 1 else "click_chain")
                           for s in clicked]
            elif sid is not None and sid in searches:
                credits = [(sid, 1.0, "search_id")]
            else:
                found = self._last_showing(state, pid, ts)
                credits = [(found, 1.0, "session_window")] if found else []
        if not credits:
            out.unattributed.append((ev, "unknown_search" if sid else "no_search_in_window"))
            return out
        for s, credit, how in credits:
            entry = searches[s]
            logged = entry["items"].get(pid)
            position = ev.position if ev.position is not None else (logged[0] if logged else 0)
            iid = ev.event_id if len(credits) == 1 else f"{ev.event_id}:{s}"
            out.interactions.append(self._make(ev, s, entry, pid, position, ev.type, iid, how, credit))
        return out

    def _park(self, state: Session, ev: PixelEvent, now_ms: int) -> None:
        pending = state["pending"]
        if len(pending) >= self.config.max_pending:
            pending.pop(0)  # bounded: the oldest waits no longer (it is settled at the next expire)
        pending.append({"since": now_ms, "event": ev.model_dump(mode="json", exclude_none=True)})

    def _clicked_searches(self, state: Session, pid: str, ts: int) -> list[str]:
        """Distinct searches whose click on ``pid`` happened within the window before ``ts``, oldest first."""
        seen: list[str] = []
        for s, cts in state["clicks"].get(pid, ()):
            if 0 <= ts - cts <= self.config.window_ms and s in state["searches"] and s not in seen:
                seen.append(s)
        return seen

    def _last_showing(self, state: Session, pid: str, ts: int) -> str | None:
        best: tuple[int, str] | None = None
        for s, entry in state["searches"].items():
            if pid in entry["items"] and 0 <= ts - entry["ts"] <= self.config.window_ms:
                if best is None or entry["ts"] > best[0]:
                    best = (entry["ts"], s)
        return best[1] if best else None

    def _impression(self, ev: PixelEvent, sid: str, entry: dict[str, Any]) -> AttributedInteraction:
        logged = entry["items"]
        items = []
        for position, pid in enumerate(ev.items or ()):
            features, explored = (logged[pid][1], bool(logged[pid][2])) if pid in logged else ({}, False)
            items.append(LoggedItem(product_id=pid, position=position, features=features, explored=explored))
        return AttributedInteraction(
            interaction_id=ev.event_id, tenant=ev.tenant, search_id=sid, query=entry["q"], items=items,
            outcome="impression", bucket=entry["b"], ranker_version=entry["rv"], session_id=ev.session_id,
            user_hash=self.hash_user(ev.user_id), event_ts=_event_ts(ev), search_ts=entry["ts"],
        )

    def _make(self, ev: PixelEvent, sid: str, entry: dict[str, Any], pid: str, position: int, outcome: str,
              iid: str, how: str, credit: float = 1.0) -> AttributedInteraction:
        logged = entry["items"].get(pid)
        features: dict[str, float] = dict(logged[1]) if logged else {}
        value = 0.0
        if ev.type in ("add_to_cart", "purchase"):
            value = ev.value if ev.value is not None else (ev.price or 0.0) * (ev.quantity or 1)
        value *= credit
        margin = value * float(features.get("margin_rate", 0.0))
        return AttributedInteraction(
            interaction_id=iid,
            tenant=ev.tenant,
            search_id=sid,
            query=entry["q"],
            product_id=pid,
            position=position,
            outcome=outcome,  # type: ignore[arg-type]
            credit=credit,
            value=value,
            margin=margin,
            currency=ev.currency,
            attributed_by=how,  # type: ignore[arg-type]
            features=features,
            explored=bool(logged[2]) if logged else False,
            bucket=entry["b"],
            ranker_version=entry["rv"],
            session_id=ev.session_id,
            user_hash=self.hash_user(ev.user_id),
            event_ts=_event_ts(ev),
            search_ts=entry["ts"],
        )
