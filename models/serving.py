"""Which embedding model and which collection serve each tenant, and the hot swap between two of them.

A tenant's searches embed the query with its serving model and retrieve from the collection built with
that model: the two travel together as one :class:`Serving`, read once per search, so a search never
mixes one model's query vector with another model's product vectors.

A swap (:func:`rebuild`) builds a new collection with the new model in the background while the old one
keeps serving: it registers the new collection as *building*, after which the catalogue indexer writes
every update to both; it re-embeds the catalogue page by page from the serving collection's payloads,
throttled to a share of one core; then it switches the tenant's :class:`Serving` under the tenant's
lock. A rollback is the same swap towards the previous version. The table is saved to a JSON file, so a
restarted worker serves what it served before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from models.embedder import Embedder
from models.store import CollectionNotFound, ProductPoint, VectorStore

__all__ = ["RebuildReport", "Serving", "ServingTable", "collection_for", "payload_text", "rebuild", "refresh_base"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    """A model and the collection built with it. ``model_dir`` is None for the worker's base model."""

    collection: str
    embedder: Embedder
    model_dir: Path | None = None

    @property
    def version(self) -> str:
        return self.embedder.version


def collection_for(tenant: str, version: str, base_version: str) -> str:
    """The base model serves from the tenant's own collection; any other version from one named after it.

    Names stay valid tenant ids (the store's rule): a hash keeps them short and distinct per tenant+version.
    """
    if version == base_version:
        return tenant
    digest = hashlib.sha1(f"{tenant}|{version}".encode()).hexdigest()[:12]
    return f"{tenant[:40]}--{digest}"


def payload_text(payload: dict[str, Any]) -> str:
    """The text a stored product was embedded by (kept in its payload by the indexer)."""
    if payload.get("text"):
        return str(payload["text"])
    # Indexed before the text was stored: rebuild it from the fields we have (no description).
    parts = [payload.get("title") or "", payload.get("brand") or "", " > ".join(payload.get("category_path") or [])]
    return ". ".join(p for p in parts if p)


def pointer_path(models_dir: Path, tenant: str) -> Path:
    """The file naming the model directory that should serve ``tenant`` (absent: the base model)."""
    return models_dir / "tenants" / tenant / "SERVING"


def read_pointer(models_dir: Path, tenant: str) -> Path | None:
    """The model directory that should serve ``tenant``, or None for the base model."""
    path = pointer_path(models_dir, tenant)
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        return None
    return (path.parent / name).resolve() if name else None


def write_pointer(models_dir: Path, tenant: str, model_dir: Path | None) -> None:
    """Point ``tenant`` at ``model_dir`` (None: back to the base model), atomically; workers swap to it."""
    path = pointer_path(models_dir, tenant)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = "" if model_dir is None else os.path.relpath(model_dir.resolve(), path.parent.resolve())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".serving-")
    with os.fdopen(fd, "w") as f:
        f.write(target + "\n")
    os.replace(tmp, path)


class ServingTable:
    """Per-tenant :class:`Serving`, replaced atomically; per-tenant locks order index writes and swaps."""

    def __init__(self, base: Embedder, state_file: Path | None = None,
                 load: Callable[[Path], Embedder] | None = None) -> None:
        self.base = base
        self.state_file = state_file
        self._load = load
        self._serving: dict[str, Serving] = {}
        self._building: dict[str, Serving] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        if state_file is not None and state_file.exists() and load is not None:
            for tenant, entry in orjson.loads(state_file.read_bytes()).items():
                model_dir = Path(entry["model_dir"])
                self._serving[tenant] = Serving(entry["collection"], load(model_dir), model_dir)

    def serving(self, tenant: str) -> Serving:
        found = self._serving.get(tenant)
        return found if found is not None else Serving(tenant, self.base)

    def building(self, tenant: str) -> Serving | None:
        return self._building.get(tenant)

    def targets(self, tenant: str) -> list[Serving]:
        """Where index writes go: the serving collection, and the one being built, if any."""
        out = [self.serving(tenant)]
        b = self._building.get(tenant)
        if b is not None and b.collection != out[0].collection:
            out.append(b)
        return out

    def lock(self, tenant: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(tenant, threading.RLock())

    def begin(self, tenant: str, target: Serving) -> None:
        with self.lock(tenant):
            self._building[tenant] = target

    def abort(self, tenant: str) -> None:
        with self.lock(tenant):
            self._building.pop(tenant, None)

    def commit(self, tenant: str) -> Serving:
        """Make the collection being built the serving one; returns the one it replaced."""
        with self.lock(tenant):
            old = self.serving(tenant)
            new = self._building.pop(tenant)
            if new.model_dir is None:
                self._serving.pop(tenant, None)
            else:
                self._serving[tenant] = new
            self._save()
            return old

    def versions(self) -> dict[str, str]:
        return {t: s.version for t, s in self._serving.items()}

    def _save(self) -> None:
        if self.state_file is None:
            return
        body = {t: {"collection": s.collection, "model_dir": str(s.model_dir), "version": s.version}
                for t, s in self._serving.items() if s.model_dir is not None}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".serving-")
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)


@dataclass
class RebuildReport:
    tenant: str
    old_version: str
    new_version: str
    collection: str
    embedded: int = 0
    skipped: int = 0  # changed or deleted while the rebuild ran (the indexer wrote those), or up to date
    swept: int = 0  # left in the new collection by an interrupted attempt, deleted since
    seconds: float = 0.0


def rebuild(store: VectorStore, table: ServingTable, tenant: str, target: Serving, *, page: int = 128,
            max_core_share: float = 0.5, progress: Callable[[int], None] | None = None,
            cancelled: Callable[[], bool] | None = None) -> RebuildReport:
    """Build ``target``'s collection from the tenant's serving catalogue, then switch to it.

    ``max_core_share`` throttles the re-embedding (sleeping in proportion to the work done) so that
    searches keep their latency while it runs.
    """
    started = time.perf_counter()
    source = table.serving(tenant)
    report = RebuildReport(tenant, source.version, target.version, target.collection)
    if target.collection == source.collection:
        return report
    # No drop: workers sharing a Qdrant server may build the same collection; what an interrupted
    # rebuild left behind is brought up to date below, and products deleted since are swept after.
    store.ensure_collection(target.collection, target.embedder.dimensions)
    table.begin(tenant, target)
    try:
        for batch in _pages(store, source.collection, page, cancelled, f"rebuild of {tenant!r} for {target.version}"):
            t0 = time.perf_counter()
            texts = [payload_text(p) for p in batch]
            vectors = target.embedder.embed(texts)
            _write(store, table, tenant, source, target, batch, texts, vectors, report)
            if progress is not None:
                progress(report.embedded + report.skipped)
            _throttle(t0, max_core_share)
        _sweep(store, table, tenant, source, target, page, report)
        with table.lock(tenant):
            table.commit(tenant)
    except BaseException:
        table.abort(tenant)
        raise
    report.seconds = time.perf_counter() - started
    log.info("tenant %s now served by %s from %s (%d products re-embedded in %.1f s)", tenant, target.version,
             target.collection, report.embedded, report.seconds)
    return report


def _write(store: VectorStore, table: ServingTable, tenant: str, source: Serving, target: Serving,
           batch: list[dict[str, Any]], texts: list[str], vectors: Any, report: RebuildReport) -> None:
    ids = [p["product_id"] for p in batch]
    # Under the tenant's lock the indexer cannot write in between: a product deleted or changed since it
    # was read is skipped here, because the indexer has already written its new state to both collections.
    with table.lock(tenant):
        now = store.payloads(source.collection, ids)
        done = store.payloads(target.collection, ids)
        points = []
        for p, text, vector in zip(batch, texts, vectors, strict=True):
            pid = p["product_id"]
            current = now.get(pid)
            have = done.get(pid)
            up_to_date = (have is not None and have.get("updated_at") == p.get("updated_at")
                          and have.get("model_version") == target.version)
            if current is None or current.get("updated_at") != p.get("updated_at") or up_to_date:
                report.skipped += 1
                continue
            points.append(ProductPoint(pid, vector, text, {**p, "text": text, "model_version": target.version}))
        if points:
            store.upsert(target.collection, points)
        report.embedded += len(points)


def refresh_base(store: VectorStore, table: ServingTable, tenant: str, *, page: int = 128,
                 max_core_share: float = 0.5, progress: Callable[[int], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> RebuildReport:
    """Re-embed, in place, the products of a base-served tenant that another model embedded.

    The base model can change under a catalogue: ``SHOPRANK_MODELS_EMBEDDER`` pointed at the int8 export
    of a catalogue indexed in fp32, or a newer export. The indexer re-embeds a product only when an update
    for it comes; the others would keep the old model's vectors and meet the new model's query vectors
    until then. Unlike :func:`rebuild` this writes into the serving collection (the base one is named
    after the tenant), so while it runs searches meet both models' vectors: for fp32 and int8 exports of
    one model those agree to a cosine of about 0.99. Products the indexer changed meanwhile are skipped:
    it wrote them with the base model already. Throttled like :func:`rebuild`.
    """
    started = time.perf_counter()
    serving = table.serving(tenant)
    report = RebuildReport(tenant, "", serving.version, serving.collection)
    if serving.model_dir is not None:  # a fine-tuned model serves it from its own collection
        return report
    old: Counter[str] = Counter()
    for batch in _pages(store, serving.collection, page, cancelled, f"re-embedding {tenant!r} for {serving.version}"):
        stale = [p for p in batch if p.get("model_version") != serving.version]
        report.skipped += len(batch) - len(stale)
        if not stale:
            continue
        t0 = time.perf_counter()
        old.update(str(p.get("model_version")) for p in stale)
        texts = [payload_text(p) for p in stale]
        vectors = serving.embedder.embed(texts)
        with table.lock(tenant):
            if table.serving(tenant) != serving:  # swapped meanwhile: the swap re-embeds
                break
            now = store.payloads(serving.collection, [p["product_id"] for p in stale])
            points = []
            for p, text, vector in zip(stale, texts, vectors, strict=True):
                current = now.get(p["product_id"])
                if current is None or current.get("updated_at") != p.get("updated_at") \
                        or current.get("model_version") == serving.version:
                    report.skipped += 1  # deleted or rewritten by the indexer since it was read
                    continue
                points.append(ProductPoint(p["product_id"], vector, text,
                                           {**current, "text": text, "model_version": serving.version}))
            if points:
                store.upsert(serving.collection, points)
            report.embedded += len(points)
        if progress is not None:
            progress(report.embedded)
        _throttle(t0, max_core_share)
    report.old_version = ", ".join(v for v, _ in old.most_common()) or serving.version
    report.seconds = time.perf_counter() - started
    if report.embedded:
        log.info("tenant %s: %d products embedded by %s re-embedded with %s in %.1f s", tenant, report.embedded,
                 report.old_version, serving.version, report.seconds)
    return report


def _pages(store: VectorStore, collection: str, page: int, cancelled: Callable[[], bool] | None,
           what: str) -> Iterator[list[dict[str, Any]]]:
    """A collection's payloads, page by page (none if it does not exist); ``cancelled`` is asked before each."""
    offset: Any = None
    while True:
        if cancelled is not None and cancelled():
            raise InterruptedError(f"{what} cancelled")
        try:
            batch, offset = store.scroll(collection, offset, page)
        except CollectionNotFound:
            return
        if batch:
            yield batch
        if offset is None:
            return


def _throttle(started: float, max_core_share: float) -> None:
    """Sleep in proportion to the work done since ``started``, so that it takes ``max_core_share`` of a core."""
    time.sleep((time.perf_counter() - started) * (1 / max_core_share - 1))


def _sweep(store: VectorStore, table: ServingTable, tenant: str, source: Serving, target: Serving, page: int,
           report: RebuildReport) -> None:
    """Delete from the new collection what the serving one no longer has (left by an earlier attempt)."""
    offset: Any = None
    while True:
        batch, offset = store.scroll(target.collection, offset, page)
        ids = [p["product_id"] for p in batch]
        with table.lock(tenant):
            try:
                present = store.payloads(source.collection, ids) if ids else {}
            except CollectionNotFound:
                present = {}
            gone = [pid for pid in ids if pid not in present]
            if gone:
                store.delete(target.collection, gone)
                report.swept += len(gone)
        if offset is None:
            return
