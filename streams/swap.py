"""Hot swaps on the worker: when a tenant's promoted model changes, rebuild and switch in the background.

The registry (``shoprank models promote | rollback``) writes each tenant's pointer file
(models.serving.pointer_path); every worker checks the pointers every ``SHOPRANK_MODELS_SWAP_CHECK_S``
and runs :func:`models.serving.rebuild` in a thread for a tenant whose pointer names another model than
the one serving it. Searches go on, on the old model and collection, until the switch.

It also brings each base-served tenant's collection to the base model once per run
(:func:`models.serving.refresh_base`): products another base model embedded (an fp32 export before an
int8 one, say) are re-embedded in place, in the background.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import faust

from models.serving import RebuildReport, Serving, collection_for, read_pointer, rebuild, refresh_base
from streams.resources import Resources
from streams.settings import Settings

__all__ = ["SwapManager"]

log = logging.getLogger(__name__)

#: How long a replaced collection is kept after a switch: longer than any search takes.
_DROP_GRACE_S = 30.0


class SwapManager:
    def __init__(self, app: faust.App, settings: Settings, resources: Resources) -> None:
        self.settings = settings
        self.resources = resources
        self.running: dict[str, dict[str, Any]] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        #: Base-served tenants whose collection holds only the base model's vectors (checked this run).
        self.refreshed: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        app.timer(settings.models.swap_check_s, name="model-swap-check")(self.check)

    async def check(self) -> None:
        if not self.resources.loaded()["model_loaded"]:
            return
        table = self.resources.serving
        for tenant in self.settings.tenants:
            if tenant in self.running:
                continue
            try:
                wanted = read_pointer(self.settings.models.dir, tenant)
            except OSError as exc:
                self.failed[tenant] = f"cannot read the serving pointer: {exc}"
                continue
            current = table.serving(tenant).model_dir
            if _same(wanted, current):
                if current is None and tenant not in self.refreshed and self.resources.loaded()["store_open"]:
                    self._start(self._refresh(tenant))
                continue
            self._start(self._swap(tenant, wanted))

    def _start(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, tenant: str) -> None:
        state: dict[str, Any] = {"to": "base", "version": self.resources.serving.base.version, "products": 0,
                                 "in_place": True}
        self.running[tenant] = state

        def progress(n: int) -> None:
            state["products"] = n

        try:
            report = await asyncio.to_thread(
                refresh_base, self.resources.store, self.resources.serving, tenant,
                max_core_share=self.settings.models.swap_core_share, progress=progress,
            )
            self.refreshed[tenant] = {"version": report.new_version, "re_embedded": report.embedded,
                                      "replaced": report.old_version if report.embedded else None,
                                      "seconds": round(report.seconds, 1)}
            self.failed.pop(tenant, None)
        except Exception as exc:  # retried at the next check, after a back-off
            log.exception("re-embedding %s's catalogue with the base model failed", tenant)
            self.failed[tenant] = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.settings.models.swap_check_s * 5)
        finally:
            self.running.pop(tenant, None)

    async def _swap(self, tenant: str, model_dir: Path | None) -> None:
        table = self.resources.serving
        state: dict[str, Any] = {"to": str(model_dir or "base"), "products": 0}
        self.running[tenant] = state
        try:
            embedder = table.base if model_dir is None else await asyncio.to_thread(self.resources._embedder, model_dir)
            target = Serving(collection_for(tenant, embedder.version, table.base.version), embedder, model_dir)
            state["version"] = embedder.version

            def progress(n: int) -> None:
                state["products"] = n

            report: RebuildReport = await asyncio.to_thread(
                rebuild, self.resources.store, table, tenant, target,
                max_core_share=self.settings.models.swap_core_share, progress=progress,
            )
            self._drop_later(tenant, report)
            self.done[tenant] = {"version": report.new_version, "replaced": report.old_version,
                                 "collection": report.collection, "embedded": report.embedded,
                                 "skipped": report.skipped, "swept": report.swept, "seconds": round(report.seconds, 1)}
            self.failed.pop(tenant, None)
        except Exception as exc:  # the old model keeps serving; retried at the next check
            log.exception("hot swap of %s to %s failed; the current model keeps serving", tenant, model_dir)
            self.failed[tenant] = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.settings.models.swap_check_s * 5)  # back off before the next attempt
        finally:
            self.running.pop(tenant, None)

    def _drop_later(self, tenant: str, report: RebuildReport) -> None:
        """Drop the replaced collection once searches that read the old Serving have finished.

        Edge only: on a shared Qdrant server another worker may still serve from it until its own swap.
        """
        old = collection_for(tenant, report.old_version, self.resources.serving.base.version)
        if self.resources.store.backend != "edge" or old == report.collection:
            return

        async def drop() -> None:
            await asyncio.sleep(_DROP_GRACE_S)
            table = self.resources.serving
            if old in {s.collection for s in table.targets(tenant)}:
                return  # rolled back meanwhile: it serves again

            def drop_locked() -> None:
                with table.lock(tenant):
                    self.resources.store.drop(old)

            await asyncio.to_thread(drop_locked)
            log.info("dropped %s's replaced collection %s", tenant, old)

        task = asyncio.ensure_future(drop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, Any]:
        table = self.resources.serving if self.resources.loaded()["model_loaded"] else None
        serving = {t: {"version": s.version, "collection": s.collection}
                   for t in self.settings.tenants if table is not None and (s := table.serving(t))}
        return {"serving": serving, "swapping": self.running, "last_swap": self.done, "failed": self.failed,
                "base_refreshed": self.refreshed}


def _same(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.resolve() == b.resolve()
