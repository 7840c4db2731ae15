"""HTTP views served by each worker: health, readiness and live stats."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust import web

if TYPE_CHECKING:
    from streams.app import ShoprankApp

__all__ = ["register_views"]


def register_views(shop: ShoprankApp) -> None:
    app = shop.faust

    @app.page("/healthz")
    async def healthz(view: web.View, request: web.Request) -> web.Response:
        """The process is alive and its event loop answers."""
        return view.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(view: web.View, request: web.Request) -> web.Response:
        """Partitions assigned and tables recovered: the worker is processing."""
        checks = _readiness(shop)
        return view.json({"ready": all(checks.values()), "checks": checks}, status=200 if all(checks.values()) else 503)

    @app.page("/v1/stats/pixel")
    async def pixel_stats(view: web.View, request: web.Request) -> web.Response:
        """Valid pixel events per tenant and type (partitions held by this worker), and rejects by reason."""
        p = shop.pixel
        return view.json(
            {
                "counts": p.totals(),
                "processed": {"valid": p.stats.valid, "rejected": p.stats.rejected},
                "dead_letters": dict(p.dead.counts),
            }
        )


def _readiness(shop: ShoprankApp) -> dict[str, Any]:
    app = shop.faust
    try:
        assigned = bool(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - consumer not started yet
        assigned = False
    recovered = app.tables.recovery.completed.is_set()
    return {"partitions_assigned": assigned, "tables_recovered": recovered, "rebalancing": not app.rebalancing}
