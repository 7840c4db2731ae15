"""Answers a search request: embed the query, hybrid retrieval with filters, facets, timings.

No Kafka here: the search agent and the HTTP gateway both call :meth:`Searcher.search`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

import numpy as np

from models.embedder import Embedder, embed_queries
from models.ranker import OnlineRanker, Ranked
from models.rules import RuledHit, RuleSource, apply_rules, without_hidden
from models.serving import Serving, ServingTable
from models.store import Hit, SearchFilter, SearchMode, VectorStore
from schemas import LoggedItem, RankedItem, SearchError, SearchLog, SearchRequest, SearchResult
from schemas.interactions import Bucket

__all__ = ["CANDIDATES", "Answered", "RankerSource", "Searcher", "assign_bucket", "error_result"]

#: Candidates retrieved per request; facets are counted over them and later stages re-rank them.
CANDIDATES = 100
_FACET_VALUES = 20


def error_result(request_id: str, tenant: str, code: str, message: str) -> SearchResult:
    """The defined answer to a request that cannot be served."""
    return SearchResult(
        request_id=request_id,
        tenant=tenant,
        error=SearchError(code=code, message=message),
        answered_at=int(time.time() * 1000),
    )


#: A tenant's online ranker, or None to keep the hybrid order (see models.ranker).
RankerSource = Callable[[str], "OnlineRanker | None"]
#: Told each answer of a batch as it is ready: (index in the batch, result, its log or None).
Answered = Callable[[int, SearchResult, "SearchLog | None"], None]


def assign_bucket(unit: str, control_share: float) -> Bucket:
    """``control`` (static hybrid order) or ``learning`` (online ranker), stable per session."""
    if control_share <= 0:
        return "learning"
    h = int.from_bytes(hashlib.blake2b(unit.encode(), digest_size=8).digest(), "big") % 10_000
    return "control" if h < control_share * 10_000 else "learning"


class Searcher:
    def __init__(self, store: VectorStore, embedder: Embedder, tenants: Collection[str],
                 rules: RuleSource | None = None, ranker: RankerSource | None = None,
                 control_share: float = 0.0, serving: ServingTable | None = None) -> None:
        self.store = store
        self.embedder = embedder
        # Each tenant's model and the collection built with it (models.serving): read once per search.
        self.serving = serving if serving is not None else ServingTable(embedder)
        self.tenants = frozenset(tenants)
        self.rules = rules  # a tenant's merchandising rules, applied last (models.rules)
        self.ranker = ranker  # a tenant's online ranker, between retrieval and rules
        self.control_share = control_share

    def search(self, request: SearchRequest, *, mode: SearchMode = "hybrid") -> SearchResult:
        return self.search_many([request], mode=mode)[0]

    def search_many(self, requests: Sequence[SearchRequest], *, mode: SearchMode = "hybrid") -> list[SearchResult]:
        return [result for result, _ in self.search_many_logged(requests, mode=mode)]

    def search_many_logged(self, requests: Sequence[SearchRequest], *, mode: SearchMode = "hybrid",
                           on_answer: Answered | None = None) -> list[tuple[SearchResult, SearchLog | None]]:
        """Answer ``requests`` in order, embedding all their queries in one ONNX call; with each answer
        goes the log of what it showed (items, ranker features, bucket) for attribution, when the
        request names a session.

        Under load the search agent hands over a whole micro-batch: one batched embedding costs little
        more than one query, which is what keeps latency flat as the request rate grows. ``on_answer``
        is called with each answer's index, result and log as soon as it is ready, so that a caller can
        send it while the rest of the batch is still being ranked.
        """
        started = time.perf_counter()
        results: list[tuple[SearchResult, SearchLog | None] | None] = [None] * len(requests)

        def answer(i: int, result: SearchResult, log: SearchLog | None) -> None:
            results[i] = (result, log)
            if on_answer is not None:
                on_answer(i, result, log)

        todo: list[tuple[int, str]] = []
        for i, request in enumerate(requests):
            query = " ".join(request.query.split())
            if request.tenant not in self.tenants:
                answer(i, error_result(request.request_id, request.tenant, "unknown_tenant",
                                       f"tenant {request.tenant!r} is not served here"), None)
            elif not query:
                answer(i, error_result(request.request_id, request.tenant, "empty_query", "the query is empty"), None)
            else:
                todo.append((i, query))
        # One ONNX call per serving model: tenants on the base model (most) share theirs.
        groups: dict[int, tuple[Serving, list[tuple[int, str]]]] = {}
        for i, query in todo:
            serving = self.serving.serving(requests[i].tenant)
            groups.setdefault(id(serving.embedder), (serving, []))[1].append((i, query))
        for serving, members in groups.values():
            t0 = time.perf_counter()
            vectors = embed_queries(serving.embedder, [q for _, q in members]) if mode != "keyword" else None
            embed_ms = (time.perf_counter() - t0) * 1000
            for j, (i, query) in enumerate(members):
                dense = vectors[j] if vectors is not None else None
                answer(i, *self._retrieve(requests[i], query, dense, mode, embed_ms, started, serving))
        return results  # type: ignore[return-value]

    def _retrieve(self, request: SearchRequest, query: str, dense: np.ndarray | None, mode: SearchMode,
                  embed_ms: float, started: float, serving: Serving) -> tuple[SearchResult, SearchLog | None]:
        t1 = time.perf_counter()
        hits = self.store.search(
            serving.collection, dense, query, filter=_filter(request), limit=max(CANDIDATES, request.page_size),
            mode=mode,
        )
        t2 = time.perf_counter()
        bucket = assign_bucket(request.session_id or request.request_id, self.control_share)
        ranker = self.ranker(request.tenant) if self.ranker is not None else None
        logged: dict[str, Ranked] = {}
        if ranker is not None and hits:
            hits, logged = _ranked_hits(ranker, query, hits, request.page_size, bucket)
        t3 = time.perf_counter()
        page, shown = self._apply_rules(request, query, dense, mode, hits, serving.collection)
        t4 = time.perf_counter()
        items = [_item(r.hit, rank, r.rules) for rank, r in enumerate(page)]
        versions = {"embedder": serving.version}
        if ranker is not None:
            versions["ranker"] = ranker.version
        result = SearchResult(
            request_id=request.request_id,
            tenant=request.tenant,
            search_id=uuid.uuid4().hex,
            query=query,
            items=items,
            facets=_facets(shown),
            model_versions=versions,
            timings_ms={
                "embed": round(embed_ms, 3),  # the batched call this query was part of
                "retrieve": round((t2 - t1) * 1000, 3),
                "rank": round((t3 - t2) * 1000, 3),
                "rules": round((t4 - t3) * 1000, 3),
                "total": round((time.perf_counter() - started) * 1000, 3),
            },
            answered_at=int(time.time() * 1000),
        )
        log = None
        if request.session_id is not None and result.search_id is not None:
            log = SearchLog(
                search_id=result.search_id, tenant=request.tenant, session_id=request.session_id,
                query=query, category=request.filters.category if request.filters else None,
                items=[_logged_item(it, logged.get(it.product_id)) for it in items],
                bucket=bucket, ranker_version=versions.get("ranker"), answered_at=result.answered_at,
            )
        return result, log

    def _apply_rules(self, request: SearchRequest, query: str, dense: np.ndarray | None, mode: SearchMode,
                     hits: list[Hit], collection: str) -> tuple[list[RuledHit], list[Hit]]:
        """The page after the tenant's merchandising rules (the last stage, over every candidate retrieved),
        and the candidates that are not hidden, which facets count."""
        rules = self.rules(request.tenant) if self.rules is not None else ()
        if not rules:
            return [RuledHit(h) for h in hits[: request.page_size]], hits

        def pinned(product_ids: Sequence[str]) -> list[Hit]:
            # A pinned product retrieval missed is shown only if it passes the request's own filters.
            where = replace(_filter(request) or SearchFilter(), product_ids=tuple(product_ids))
            return self.store.search(collection, dense, query, filter=where, limit=len(product_ids),
                                     mode="dense" if dense is not None else mode)

        category = request.filters.category if request.filters else None
        now_ms = int(time.time() * 1000)
        page = apply_rules(hits, rules, query=query, category=category, now_ms=now_ms, page_size=request.page_size,
                           lookup=pinned)
        return page, without_hidden(hits, rules, query=query, category=category, now_ms=now_ms)


def _ranked_hits(ranker: OnlineRanker, query: str, hits: list[Hit], page_size: int, bucket: Bucket,
                 ) -> tuple[list[Hit], dict[str, Ranked]]:
    """Hits re-ordered by the ranker (learning bucket) or kept in hybrid order (control), with the
    features of each as logged for learning. Both buckets log features, so both teach the ranker."""
    now_ms = int(time.time() * 1000)
    if bucket == "learning":
        ranked = ranker.rank(query, hits, now_ms=now_ms, page_size=page_size)
    else:
        feats = ranker.features(query, hits[:page_size], now_ms)
        ranked = [Ranked(h, h.score, f) for h, f in zip(hits, feats, strict=False)]
        ranked += [Ranked(h, h.score, {}) for h in hits[len(feats):]]
    out = [Hit(r.hit.product_id, float(r.value), {**r.hit.scores, "ranker": float(r.value)}, r.hit.payload)
           for r in ranked]
    # Features are read (and their dicts built) only for what the page shows (see _retrieve).
    return out, {r.hit.product_id: r for r in ranked}


def _logged_item(item: RankedItem, ranked: Ranked | None) -> LoggedItem:
    """What the log keeps of a shown item: its ranker features, or its scores where it has none
    (no ranker, or a candidate beyond the ranker's depth that a rule brought onto the page)."""
    features = ranked.features if ranked is not None else {}
    return LoggedItem(product_id=item.product_id, position=item.rank, features=features or dict(item.scores),
                      explored=ranked.explored if ranked is not None and features else False)


def _filter(request: SearchRequest) -> SearchFilter | None:
    f = request.filters
    if f is None:
        return None
    return SearchFilter(
        category=f.category,
        brands=tuple(f.brand) if f.brand else None,
        price_min=f.price_min,
        price_max=f.price_max,
        in_stock=f.in_stock,
    )


def _item(hit: Hit, rank: int, rules: Sequence[str] = ()) -> RankedItem:
    p = hit.payload
    return RankedItem(
        product_id=hit.product_id,
        rank=rank,
        score=float(hit.score),
        scores={k: float(v) for k, v in hit.scores.items()},
        rules=list(rules),
        title=p.get("title"),
        price=p.get("price"),
        currency=p.get("currency"),
    )


def _facets(hits: list[Hit]) -> dict[str, dict[str, int]]:
    """Counts over the candidate set: brand, top-level category, leaf category."""
    brand: Counter[str] = Counter()
    top: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for h in hits:
        p = h.payload
        if p.get("brand"):
            brand[p["brand"]] += 1
        path = p.get("category_path") or []
        if path:
            top[path[0]] += 1
            leaf[path[-1]] += 1
    return {
        name: dict(c.most_common(_FACET_VALUES))
        for name, c in (("brand", brand), ("category", top), ("subcategory", leaf))
        if c
    }
