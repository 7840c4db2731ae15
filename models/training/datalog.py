"""The retrainer's own copy of each tenant's training data, kept on disk past the topics' retention.

Attributed interactions and catalogue texts are appended per tenant (``<tenant>/interactions.jsonl``,
``<tenant>/catalogue.jsonl``); ``checkpoint.json`` records, in one atomic rename, the Kafka position
the files reflect and each file's length at that moment. Opening the log cuts every file back to its
recorded length, so records written after the last checkpoint (a crash between the append and the
checkpoint) are dropped and read again from Kafka: nothing is lost and nothing is counted twice,
without a transaction spanning the broker and the disk.

Only what training needs is kept: interactions lose ``user_hash`` and ``session_id`` on the way in,
so a forgotten shopper (``shoprank forget-user``) has nothing here to forget. Catalogue lines are
written only when a product's text changes; price and stock updates add nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

import orjson

from models.exceptions import ModelError
from models.indexer import product_text
from schemas import CatalogueUpdate
from schemas.interactions import AttributedInteraction

__all__ = ["TenantCounts", "TrainingLog"]

_CHECKPOINT = "checkpoint.json"
_LOCK = ".lock"
_POSITIVE = frozenset({"click", "add_to_cart", "purchase"})


@dataclass
class TenantCounts:
    """How much a tenant's log holds: the retraining triggers read ``positives``."""

    interactions: int = 0
    positives: int = 0
    products: int = 0
    last_event_ts: int = 0


@dataclass
class _Files:
    handles: dict[Path, IO[bytes]] = field(default_factory=dict)

    def handle(self, path: Path) -> IO[bytes]:
        if path not in self.handles:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.handles[path] = path.open("ab")
        return self.handles[path]

    def sync(self) -> None:
        for f in self.handles.values():
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        for f in self.handles.values():
            f.close()
        self.handles.clear()


class TrainingLog:
    """Per-tenant interaction and catalogue-text files under ``root``, exact across crashes.

    One process at a time: opening takes an exclusive lock on ``root`` and raises
    :class:`~models.exceptions.ModelError` if another retrainer holds it. Call :meth:`add_interaction`
    and :meth:`add_catalogue` for each record, then :meth:`checkpoint` with the positions they came
    from; only checkpointed records survive a crash.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._lock = (root / _LOCK).open("w")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ModelError(f"another retrainer is using {root} — run one `shoprank models retrain` per "
                             "models directory") from None
        state = self._read_checkpoint()
        self.positions: dict[str, int] = dict(state.get("positions", {}))
        self.counts: dict[str, TenantCounts] = {t: TenantCounts(**c) for t, c in state.get("counts", {}).items()}
        self._cut_back({str(k): int(v) for k, v in state.get("sizes", {}).items()})
        self._texts: dict[str, dict[str, tuple[int, str]]] = {}  # tenant -> product -> (updated_at, text hash)
        self._files = _Files()

    # ------------------------------------------------------------------------------------- recovery

    def _read_checkpoint(self) -> dict[str, Any]:
        path = self.root / _CHECKPOINT
        if not path.exists():
            return {}
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ModelError(f"{path} is not valid JSON ({exc}); remove the folder {self.root} to rebuild the "
                             "training log from the topics (what their retention still holds)") from None
        return data if isinstance(data, dict) else {}

    def _cut_back(self, sizes: dict[str, int]) -> None:
        """Truncate every data file to its checkpointed length (0 for a file the checkpoint never saw)."""
        for path in self.root.glob("*/*.jsonl"):
            rel = str(path.relative_to(self.root))
            keep = sizes.get(rel, 0)
            if path.stat().st_size > keep:
                with path.open("r+b") as f:
                    f.truncate(keep)

    # --------------------------------------------------------------------------------------- writing

    def _path(self, tenant: str, name: str) -> Path:
        return self.root / tenant / f"{name}.jsonl"

    def add_interaction(self, record: AttributedInteraction) -> None:
        row = record.model_copy(update={"user_hash": None, "session_id": None})
        self._files.handle(self._path(record.tenant, "interactions")).write(
            orjson.dumps(row.model_dump(mode="json", exclude_none=True)) + b"\n")
        c = self.counts.setdefault(record.tenant, TenantCounts())
        c.interactions += 1
        c.positives += record.outcome in _POSITIVE
        c.last_event_ts = max(c.last_event_ts, record.event_ts)

    def add_catalogue(self, update: CatalogueUpdate) -> bool:
        """Record the product's text if it is new or changed; False when nothing was written."""
        if update.op != "upsert":
            return False  # past interactions with a removed product still teach its text
        text = product_text(update)
        digest = _digest(text)
        known = self._known_texts(update.tenant)
        seen = known.get(update.product_id)
        if seen is not None and (seen[1] == digest or update.updated_at < seen[0]):
            return False  # unchanged, or older than the text we hold (out-of-order delivery)
        known[update.product_id] = (update.updated_at, digest)
        line = {"tenant": update.tenant, "product_id": update.product_id, "updated_at": update.updated_at,
                "text": text}
        self._files.handle(self._path(update.tenant, "catalogue")).write(orjson.dumps(line) + b"\n")
        self.counts.setdefault(update.tenant, TenantCounts()).products = len(known)
        return True

    def checkpoint(self, positions: dict[str, int]) -> None:
        """Make everything added so far durable, together with the Kafka ``positions`` it reflects."""
        self._files.sync()
        self.positions.update(positions)
        sizes = {str(p.relative_to(self.root)): p.stat().st_size for p in self.root.glob("*/*.jsonl")}
        state = {"positions": self.positions, "sizes": sizes,
                 "counts": {t: c.__dict__ for t, c in self.counts.items()}}
        tmp = self.root / f"{_CHECKPOINT}.tmp"
        with tmp.open("wb") as f:
            f.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / _CHECKPOINT)

    def close(self) -> None:
        self._files.close()
        self._lock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------- reading

    def _known_texts(self, tenant: str) -> dict[str, tuple[int, str]]:
        if tenant not in self._texts:
            self._texts[tenant] = {pid: (ts, _digest(text)) for pid, (ts, text) in self._latest(tenant).items()}
        return self._texts[tenant]

    def tenants(self) -> list[str]:
        return sorted(self.counts)

    def interactions(self, tenant: str) -> Iterator[AttributedInteraction]:
        """The tenant's checkpointed interactions, oldest first."""
        self._files.sync()
        path = self._path(tenant, "interactions")
        if not path.exists():
            return
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield AttributedInteraction.model_validate(orjson.loads(line))

    def catalogue(self, tenant: str) -> dict[str, str]:
        """product id → its latest indexed text."""
        return {pid: text for pid, (_, text) in self._latest(tenant).items()}

    def _latest(self, tenant: str) -> dict[str, tuple[int, str]]:
        self._files.sync()
        path = self._path(tenant, "catalogue")
        out: dict[str, tuple[int, str]] = {}
        if path.exists():
            with path.open("rb") as f:
                for line in f:
                    if line.strip():
                        row = orjson.loads(line)
                        ts = int(row["updated_at"])
                        if row["product_id"] not in out or ts >= out[row["product_id"]][0]:
                            out[row["product_id"]] = (ts, row["text"])
        return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
