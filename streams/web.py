"""HTTP views served by each worker: health, readiness and live stats."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
from faust import web

from schemas import DecodeError, SearchRequest, SearchResult, encode, validate
from schemas.topics import TOPICS
from streams import metrics
from streams.collector import Collector, CollectorError
from streams.kafka import broker_answers
from streams.keys import KeyRing
from streams.pixel_js import pixel_etag, pixel_minified
from streams.search import request_error_code

if TYPE_CHECKING:
    from streams.app import ShoprankApp

__all__ = ["openapi_document", "register_views"]

_MAX_BODY = 64 * 1024


def register_views(shop: ShoprankApp) -> None:
    app = shop.faust
    keys = KeyRing(shop.settings.keys_file)
    collector = Collector(shop.settings, keys)
    pixel_topic = app.topic(
        shop.settings.topic("pixel"), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    def cors(request: web.Request) -> dict[str, str]:
        # Echo the origin: the collector itself decides, per key, which origins may write.
        origin = request.headers.get("Origin")
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}

    @app.page("/v1/events")
    class EventsView(web.View):
        """The pixel's collector: POST {"key": "sr_pk_…", "events": [...]}; 202, or a 4xx naming each bad event."""

        async def options(self, request: web.Request) -> web.Response:
            headers = {**cors(request), "Access-Control-Allow-Methods": "POST",
                       "Access-Control-Allow-Headers": "Content-Type, X-Shoprank-Key", "Access-Control-Max-Age": "600"}
            return self.bytes(b"", status=204, headers=headers)

        async def post(self, request: web.Request) -> web.Response:
            raw = await request.read()
            try:
                admitted = collector.admit(raw, origin=request.headers.get("Origin"),
                                           header_key=request.headers.get("X-Shoprank-Key"))
            except CollectorError as err:
                metrics.COLLECTOR_REFUSED.labels(err.code).inc()
                headers = cors(request)
                if err.retry_after_s is not None:
                    headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
                return self.json(err.body(), status=err.status, headers=headers)
            # Acknowledge only what the broker has acknowledged: the pixel retries anything else.
            try:
                pending = [await pixel_topic.send(key=k, value=v) for k, v in admitted.records]
                for fut in pending:
                    await fut
            except Exception as exc:  # noqa: BLE001 - the broker is away: 503 so the pixel retries
                metrics.COLLECTOR_REFUSED.labels("broker_unavailable").inc()
                return self.json({"error": "broker_unavailable", "message": f"retry later ({type(exc).__name__})"},
                                 status=503, headers={**cors(request), "Retry-After": "2"})
            metrics.COLLECTOR_ACCEPTED.labels(admitted.key.tenant).inc(len(admitted.records))
            return self.json({"accepted": len(admitted.records)}, status=202, headers=cors(request))

    @app.page("/v1/pixel.js")
    async def pixel_js(view: web.View, request: web.Request) -> web.Response:
        """The pixel, minified (under 5 KB); cached by ETag."""
        etag = pixel_etag()
        headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
        if request.headers.get("If-None-Match") == etag:
            return view.bytes(b"", status=304, headers=headers)
        return view.bytes(pixel_minified(), content_type="application/javascript", headers=headers)

    @app.page("/healthz")
    async def healthz(view: web.View, request: web.Request) -> web.Response:
        """The process is alive and its event loop answers."""
        return view.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(view: web.View, request: web.Request) -> web.Response:
        """Broker reachable, partitions assigned, tables recovered, store open, model loaded; else 503 naming why."""
        checks = {"broker_reachable": await broker_answers(shop.bootstrap, 1.0), **_readiness(shop)}
        failed = [name for name, ok in checks.items() if not ok]
        return view.json({"ready": not failed, "checks": checks, "failed": failed}, status=503 if failed else 200)

    @app.page("/metrics")
    async def prometheus(view: web.View, request: web.Request) -> web.Response:
        """Prometheus text exposition (streams.metrics); sampled values are refreshed in the background."""
        return view.bytes(metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    @app.page("/v1/search")
    class SearchView(web.View):
        """POST a SearchRequest (request_id optional): a SearchResult, or a 4xx with the reason."""

        async def get(self, request: web.Request) -> web.Response:
            return self.json({"error": "method_not_allowed", "message": "POST a JSON search request"}, status=405)

        async def options(self, request: web.Request) -> web.Response:
            # Shop pages may search from the browser: any origin, JSON body (a CORS preflight).
            headers = {**cors(request), "Access-Control-Allow-Methods": "POST",
                       "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}
            return self.bytes(b"", status=204, headers=headers)

        async def post(self, request: web.Request) -> web.Response:
            hdr = cors(request)
            raw = await request.read()
            if len(raw) > _MAX_BODY:
                too_big = {"error": "payload_too_large", "message": f"at most {_MAX_BODY} bytes"}
                return self.json(too_big, status=413, headers=hdr)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return self.json({"error": "invalid_json", "message": str(exc)}, status=400, headers=hdr)
            if isinstance(body, dict):
                body.setdefault("request_id", uuid.uuid4().hex)
            try:
                req = validate(SearchRequest, body)
            except DecodeError as err:
                return self.json({"error": request_error_code(err), "message": err.detail}, status=422, headers=hdr)
            result = await shop.search.answer(req)
            if result.error:
                status = {"unknown_tenant": 404, "internal_error": 503}.get(result.error.code, 422)
                failed = {"error": result.error.code, "message": result.error.message}
                return self.json(failed, status=status, headers=hdr)
            return self.bytes(encode(result), content_type="application/json", headers=hdr)

    @app.page("/openapi.json")
    async def openapi(view: web.View, request: web.Request) -> web.Response:
        return view.bytes(orjson.dumps(openapi_document()), content_type="application/json")

    @app.page("/v1/stats/catalogue")
    async def catalogue_stats(view: web.View, request: web.Request) -> web.Response:
        s = shop.catalogue.stats
        out = {k: v for k, v in vars(s).items() if k != "tenants"}
        out["tenants"] = sorted(s.tenants)
        out["dead_letters"] = dict(shop.catalogue.dead.counts)
        out["coverage"] = shop.catalogue.coverage()
        return view.json(out)

    @app.page("/v1/stats/search")
    async def search_stats(view: web.View, request: web.Request) -> web.Response:
        """Searches answered, error answers, dead letters and stale requests skipped, by this worker."""
        s = shop.search.stats
        return view.json({
            "answered": s.answered, "errors": s.errors, "dead_lettered": s.dead_lettered, "expired": s.expired,
            "dead_letters": dict(shop.search.dead.counts),
            "requests_group": shop.search.requests.group,
            "requests_assigned": sorted(f"{tp.topic}[{tp.partition}]" for tp in shop.search.requests.partitions()),
        })

    @app.page("/v1/analytics/{tenant}")
    async def tenant_analytics(view: web.View, request: web.Request, tenant: str) -> web.Response:
        """Conversion against the control bucket, revenue per search, new products, query coverage."""
        if tenant not in shop.settings.tenants:
            return view.json({"error": {"code": "unknown_tenant", "message": f"tenant {tenant!r} is not served here"}},
                             status=404)
        if shop.settings.security.require_read_key:
            auth = request.headers.get("Authorization", "")
            key = keys.lookup(auth.removeprefix("Bearer ").strip() or None, "read")
            if key is None:
                return view.json({"error": {"code": "invalid_key", "message": "send Authorization: Bearer sr_sk_…"}},
                                 status=401)
            if key.tenant != tenant:
                return view.json({"error": {"code": "forbidden", "message": "this key reads another tenant"}},
                                 status=403)
        scope = request.query.get("partitions", "held")
        if scope not in ("held", "active"):
            return view.json({"error": {"code": "invalid_partitions",
                                        "message": "partitions is 'held' (the default) or 'active'"}}, status=400)
        return view.json({"tenant": tenant, **analytics_summary(shop, tenant, active_only=scope == "active")})

    @app.page("/v1/stats/broker")
    async def broker_stats(view: web.View, request: web.Request) -> web.Response:
        """Records lost with a broker's log (streams.logloss): per topic, and each partition's reset; the
        stream consumer's joins again after topics came back (streams.group_watch); records each agent
        was not handed in order and read from the broker (streams.gapfill)."""
        gaps = {p.gaps.agent: asdict(p.gaps.stats) for p in (shop.pixel, shop.learning, shop.catalogue)}
        return view.json({**shop.log_loss.stats(), "group": shop.group.stats(), "gaps": gaps})

    @app.page("/v1/stats/models")
    async def model_stats(view: web.View, request: web.Request) -> web.Response:
        """Which model and collection serve each tenant; hot swaps and base re-embeddings running, done and failed."""
        return view.json(shop.swaps.stats())

    @app.page("/v1/stats/rules")
    async def rules_stats(view: web.View, request: web.Request) -> web.Response:
        """Live merchandising rules per tenant, records read from the rules topic, dead letters."""
        return view.json(shop.rules.stats())

    @app.page("/v1/stats/rankers")
    async def ranker_stats(view: web.View, request: web.Request) -> web.Response:
        """The ranker version this worker serves per tenant; snapshots published, adopted and refused."""
        return view.json(shop.ranker_share.stats())

    @app.page("/v1/stats/learning")
    async def learning_stats(view: web.View, request: web.Request) -> web.Response:
        """Attributed interactions learned (after dedupe), duplicates dropped, rejects, and when it last learned."""
        return view.json(asdict(shop.learning.stats))

    @app.page("/v1/stats/pixel")
    async def pixel_stats(view: web.View, request: web.Request) -> web.Response:
        """Valid pixel events per tenant and type (partitions held by this worker), and rejects by reason."""
        p = shop.pixel
        return view.json(
            {
                "counts": p.totals(),
                "processed": {"valid": p.stats.valid, "rejected": p.stats.rejected},
                "dead_letters": dict(p.dead.counts),
                "attribution": p.attribution.stats.as_dict(),
                "privacy": shop.forget.stats(),
            }
        )


def analytics_summary(shop: ShoprankApp, tenant: str, *, active_only: bool = False) -> dict[str, Any]:
    """The tenant's analytics from the partitions this worker holds (``active_only``: only those it
    processes, which summed over every worker of the group count each partition once)."""
    from streams.analytics import summarise

    held = shop.learning.active_partitions() if active_only else shop.learning.held_partitions()
    total = TOPICS["interactions"].partitions
    summary = summarise(shop.learning.by_bucket(tenant, held), dict(shop.search.stats.coverage.get(tenant, {})))
    # Which interactions partitions the totals cover: a worker without a standby copy of the tenant's
    # partition answers with less than the whole shop, and says so.
    summary["partitions"] = {"held": sorted(held), "of": total, "complete": len(held) == total}
    return summary


def _readiness(shop: ShoprankApp) -> dict[str, Any]:
    app = shop.faust
    try:
        assigned = bool(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - consumer not started yet
        assigned = False
    recovered = app.tables.recovery.completed.is_set()
    return {
        "partitions_assigned": assigned,
        "search_requests_assigned": shop.search.requests.assigned,
        "tables_recovered": recovered,
        "not_rebalancing": not app.rebalancing,
        "rules_loaded": shop.rules.loaded,
        "privacy_loaded": shop.forget.loaded,
        "rankers_loaded": shop.ranker_share.loaded,
        **shop.resources.loaded(),
        "store_writable": shop.catalogue.stats.store_error is None,
    }


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the gateway, with the request and result schemas from ``schemas/``."""
    req = SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    res = SearchResult.model_json_schema(ref_template="#/components/schemas/{model}")
    components = {**req.pop("$defs", {}), **res.pop("$defs", {}), "SearchRequest": req, "SearchResult": res}
    components["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    }
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "shoprank gateway", "version": "1"},
        "paths": {
            "/v1/search": {
                "post": {
                    "summary": "Search a tenant's catalogue (request_id may be omitted)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Ranked results",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/SearchResult"}}
                            },
                        },
                        "400": {"description": "Body is not JSON", **err},
                        "404": {"description": "Unknown tenant", **err},
                        "422": {"description": "Request breaks the contract (empty or overlong query…)", **err},
                    },
                }
            },
            "/healthz": {"get": {"summary": "Process alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "Broker reachable, partitions assigned, tables recovered, store open, model loaded",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
        },
        "components": {"schemas": components},
    }
