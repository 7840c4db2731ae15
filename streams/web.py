"""HTTP views served by each worker: health, readiness and live stats."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
from faust import web

from schemas import DecodeError, SearchRequest, SearchResult, encode, validate
from streams import metrics
from streams.kafka import broker_answers
from streams.search import request_error_code

if TYPE_CHECKING:
    from streams.app import ShoprankApp

__all__ = ["register_views", "openapi_document"]

_MAX_BODY = 64 * 1024


def register_views(shop: ShoprankApp) -> None:
    app = shop.faust

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

        async def post(self, request: web.Request) -> web.Response:
            raw = await request.read()
            if len(raw) > _MAX_BODY:
                return self.json({"error": "payload_too_large", "message": f"at most {_MAX_BODY} bytes"}, status=413)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return self.json({"error": "invalid_json", "message": str(exc)}, status=400)
            if isinstance(body, dict):
                body.setdefault("request_id", uuid.uuid4().hex)
            try:
                req = validate(SearchRequest, body)
            except DecodeError as err:
                return self.json({"error": request_error_code(err), "message": err.detail}, status=422)
            result = await shop.search.answer(req)
            if result.error:
                status = {"unknown_tenant": 404, "internal_error": 503}.get(result.error.code, 422)
                return self.json({"error": result.error.code, "message": result.error.message}, status=status)
            return self.bytes(encode(result), content_type="application/json")

    @app.page("/openapi.json")
    async def openapi(view: web.View, request: web.Request) -> web.Response:
        return view.bytes(orjson.dumps(openapi_document()), content_type="application/json")

    @app.page("/v1/stats/catalogue")
    async def catalogue_stats(view: web.View, request: web.Request) -> web.Response:
        s = shop.catalogue.stats
        out = {k: v for k, v in vars(s).items() if k != "tenants"}
        out["tenants"] = sorted(s.tenants)
        out["dead_letters"] = dict(shop.catalogue.dead.counts)
        return view.json(out)

    @app.page("/v1/analytics/{tenant}")
    async def tenant_analytics(view: web.View, request: web.Request, tenant: str) -> web.Response:
        """Conversion against the control bucket, revenue per search, new products, query coverage."""
        if tenant not in shop.settings.tenants:
            return view.json({"error": {"code": "unknown_tenant", "message": f"tenant {tenant!r} is not served here"}},
                             status=404)
        return view.json({"tenant": tenant, **analytics_summary(shop, tenant)})

    @app.page("/v1/stats/rules")
    async def rules_stats(view: web.View, request: web.Request) -> web.Response:
        """Live merchandising rules per tenant, records read from the rules topic, dead letters."""
        return view.json(shop.rules.stats())

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
            }
        )


def analytics_summary(shop: ShoprankApp, tenant: str) -> dict[str, Any]:
    from streams.analytics import summarise

    return summarise(shop.learning.by_bucket(tenant), dict(shop.search.stats.coverage.get(tenant, {})))


def _readiness(shop: ShoprankApp) -> dict[str, Any]:
    app = shop.faust
    try:
        assigned = bool(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - consumer not started yet
        assigned = False
    recovered = app.tables.recovery.completed.is_set()
    return {
        "partitions_assigned": assigned,
        "tables_recovered": recovered,
        "not_rebalancing": not app.rebalancing,
        "rules_loaded": shop.rules.loaded,
        **shop.resources.loaded(),
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
