"""The pixel collector's admission rules: key, origin, size, rate, then the event contract.

Pure and synchronous (the HTTP view in streams.web publishes what this admits), so every rule is
tested without a server. A request is admitted whole or refused whole: nothing malformed reaches
the pixel topic, and a refusal says which event failed and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas import DecodeError, PixelEvent, encode
from streams.attribution import user_hasher
from streams.keys import KeyRecord, KeyRing
from streams.pixel import PixelValidator
from streams.settings import Settings

__all__ = ["Admitted", "Collector", "CollectorError", "TokenBucket"]


class CollectorError(Exception):
    """A refused request: HTTP status, a stable code and a message that says what to fix."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            out["events"] = self.details
        return out


class EventRefused(ValueError):
    """One event of a request refused for what only the collector checks (the shape the contract's decoder
    needs, the write key's tenant); ``reason`` is the per-event code the response lists, as a
    :class:`~schemas.DecodeError`'s is. Not a dead-letter reason: refused events never reach a topic."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Admitted:
    """Events ready for the pixel topic: (key, value) pairs, keyed ``tenant:session_id``."""

    key: KeyRecord
    records: list[tuple[bytes, bytes]] = field(default_factory=list)


class TokenBucket:
    """Requests per second per key, with a burst; one bucket per key id, in this worker's memory."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate, self.burst = rate_per_s, burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, name: str, now: float) -> float:
        """0 if admitted, else the seconds until a token is free."""
        tokens, last = self._state.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._state[name] = (tokens - 1.0, now)
            return 0.0
        self._state[name] = (tokens, now)
        return (1.0 - tokens) / self.rate


class Collector:
    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        sec = settings.security
        self.keys = keys
        self.validator = PixelValidator(settings)
        self.max_request_bytes = sec.max_request_bytes
        self.max_events = sec.max_events_per_request
        self.bucket = TokenBucket(sec.rate_per_key_per_s, sec.rate_burst)
        # User ids leave the collector pseudonymised: the topic never holds the pixel's id itself.
        self.pseudonymise = user_hasher(settings.attribution.user_hash_key)

    def admit(self, raw: bytes, *, origin: str | None, header_key: str | None = None,
              now_ms: int | None = None) -> Admitted:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if len(raw) > self.max_request_bytes:
            limit = self.max_request_bytes
            raise CollectorError(413, "payload_too_large", f"a request may carry at most {limit} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CollectorError(400, "invalid_json", f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise CollectorError(400, "invalid_body", 'send a JSON object: {"key": "sr_pk_…", "events": [...]}')
        given = header_key or body.get("key")
        key = self.keys.lookup(given if isinstance(given, str) else None, "write")
        if key is None:
            raise CollectorError(401, "invalid_key", "missing, unknown or revoked write key; `shoprank keys create`")
        if not key.allows_origin(origin):
            raise CollectorError(403, "origin_not_allowed", f"origin {origin} is not on this key's allow-list")
        wait = self.bucket.take(key.id, now_ms / 1000)
        if wait > 0:
            raise CollectorError(429, "rate_limited", "too many requests for this key; retry later",
                                 retry_after_s=wait)
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise CollectorError(422, "no_events", "events must be a non-empty list")
        if len(events) > self.max_events:
            raise CollectorError(422, "too_many_events", f"at most {self.max_events} events per request")
        admitted = Admitted(key)
        problems: list[dict[str, Any]] = []
        for i, item in enumerate(events):
            try:
                event = self._check(item, key, now_ms)
            except (DecodeError, EventRefused) as err:
                problems.append({"index": i, "error": err.reason, "message": err.detail})
                continue
            admitted.records.append((f"{event.tenant}:{event.session_id}".encode(), encode(event)))
        if problems:
            cross = any(p["error"] == "tenant_mismatch" for p in problems)
            raise CollectorError(403 if cross else 422, "tenant_mismatch" if cross else "invalid_events",
                                 f"{len(problems)} of {len(events)} events refused; nothing was accepted",
                                 details=problems)
        return admitted

    def _check(self, item: Any, key: KeyRecord, now_ms: int) -> PixelEvent:
        if not isinstance(item, dict):
            raise EventRefused("schema_violation", "an event must be a JSON object")
        if item.get("tenant") != key.tenant:
            raise EventRefused("tenant_mismatch", f"this key writes for tenant {key.tenant!r} only")
        # The collector's clock, not the browser's, decides when an event arrived.
        event = self.validator.check(orjson.dumps({**item, "server_ts": now_ms}), now_ms=now_ms)
        return event.model_copy(update={"user_id": "h:" + (self.pseudonymise(event.user_id) or "")})
