"""Forgotten shoppers: every worker's copy of the privacy topic, and the pseudonyms it matches.

``shoprank forget-user`` publishes a :class:`ForgetUser` record; every worker reads the whole
compacted topic (streams.follow) and from then on drops that shopper's events before they are
counted, attributed or learnt from, including events replayed from the log after a restart. Past
events stay in the event topics, pseudonymised, until the topics' retention removes them (see the
README's privacy section); aggregates and ranker weights hold no per-shopper data.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import faust

from schemas import DecodeError, ForgetUser, decode, encode
from streams.attribution import user_hasher
from streams.deadletters import DeadLetterSink, record_origin, salvaged_tenant
from streams.follow import TopicFollower
from streams.settings import Settings

__all__ = ["ForgetList", "forget_record", "user_key_of"]

log = logging.getLogger(__name__)

#: How long the pixel agent waits at start-up for the privacy topic, before it goes on without it.
LOAD_WAIT_S = 30.0
_PREFIX = "h:"


def user_key_of(user_id: str, secret: str) -> str:
    """The pseudonym of a user id: the collector's ``h:<hash>`` as published, or the hash of a raw id."""
    if user_id.startswith(_PREFIX):
        return user_id[len(_PREFIX):]
    return user_hasher(secret)(user_id) or ""


def forget_record(tenant: str, user_id: str, secret: str) -> tuple[bytes, bytes]:
    """Key and value of the privacy record that forgets ``user_id`` of ``tenant``."""
    record = ForgetUser(tenant=tenant, user_key=user_key_of(user_id, secret), requested_at=int(time.time() * 1000))
    return f"{tenant}:{record.user_key}".encode(), encode(record)


class ForgetList:
    AGENT = "privacy"

    def __init__(self, app: faust.App, settings: Settings, bootstrap: str) -> None:
        self.secret = settings.attribution.user_hash_key
        self.tenants = frozenset(settings.tenants)
        self.forgotten: set[tuple[str, str]] = set()
        self.counts: Counter[str] = Counter()
        self.dead = DeadLetterSink(app, settings, self.AGENT)
        self.follower = TopicFollower(bootstrap, settings.topic("privacy"), self._fold,
                                      settings.kafka.fetch_max_wait_ms)
        self._waited = False
        app.task(self.follower.run)

    @property
    def loaded(self) -> bool:
        return self.follower.loaded

    async def ready(self) -> None:
        """Wait once, at start-up, until the topic is read, so no forgotten shopper's event slips through."""
        if self._waited:
            return
        self._waited = True
        if not await self.follower.wait_loaded(LOAD_WAIT_S):
            log.warning("privacy topic %s not read within %.0f s; going on with what is read", self.follower.topic,
                        LOAD_WAIT_S)

    def is_forgotten(self, tenant: str, user_id: str) -> bool:
        return bool(self.forgotten) and (tenant, user_key_of(user_id, self.secret)) in self.forgotten

    async def _fold(self, rec: Any) -> None:
        try:
            request = decode(ForgetUser, rec.value or b"")
            if rec.key is None or rec.key.decode(errors="replace") != f"{request.tenant}:{request.user_key}":
                raise DecodeError("invalid_value", "key must be tenant:user_key — use `shoprank forget-user`")
        except DecodeError as err:
            await self.dead.send(record_origin(rec), err.reason, err.detail,
                                 tenant=salvaged_tenant(rec.value))
            return
        if request.tenant in self.tenants:
            self.forgotten.add((request.tenant, request.user_key))
            self.counts["users"] = len(self.forgotten)

    def stats(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "users": len(self.forgotten), "events_dropped": self.counts["events_dropped"],
                "dead_letters": dict(self.dead.counts)}
