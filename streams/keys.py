"""Per-tenant API keys, stored hashed: public write keys for the pixel, secret read keys for analytics.

A key is shown once, when it is created; the key file holds only its SHA-256 hash. Keys are 144
random bits, so a fast hash is enough (there is nothing to brute-force, unlike a password).
Workers reread the file when it changes, so ``shoprank keys create`` takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import orjson

__all__ = [
    "KeyFileError",
    "KeyKind",
    "KeyRecord",
    "KeyRing",
    "create_key",
    "hash_key",
    "normalise_origin",
    "read_keys",
    "revoke_key",
]

KeyKind = Literal["write", "read"]
_PREFIX: dict[str, str] = {"write": "sr_pk_", "read": "sr_sk_"}


class KeyFileError(ValueError):
    """The key file is unreadable or an argument is wrong; the message says what to do."""


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: never the key itself."""

    id: str
    tenant: str
    kind: KeyKind
    hash: str
    origins: tuple[str, ...] = field(default_factory=tuple)
    created_at: int = 0
    revoked_at: int | None = None

    def allows_origin(self, origin: str | None) -> bool:
        """An empty allow-list admits any origin; a request without Origin is a server-side sender."""
        if not self.origins or origin is None:
            return True
        return normalise_origin(origin) in self.origins


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def normalise_origin(origin: str) -> str:
    """``https://Shop.example:443/`` → ``https://shop.example``: the form browsers send in Origin."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KeyFileError(f"origin {origin!r} is not scheme://host[:port] (for example https://shop.example)")
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


def read_keys(path: Path) -> list[KeyRecord]:
    if not path.exists():
        return []
    try:
        data = orjson.loads(path.read_bytes())
        return [KeyRecord(**{**k, "origins": tuple(k.get("origins", ()))}) for k in data["keys"]]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise KeyFileError(f"key file {path} is damaged ({exc}); restore it or remove it and create new keys") from exc


def _write_keys(path: Path, records: list[KeyRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps({"keys": [asdict(r) for r in records]}, option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    with os.fdopen(fd, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def create_key(
    path: Path, tenant: str, kind: KeyKind = "write", origins: tuple[str, ...] = ()
) -> tuple[KeyRecord, str]:
    """Create a key; returns its record and the key itself, which is never stored."""
    if kind not in _PREFIX:
        raise KeyFileError(f"key kind must be write or read, not {kind!r}")
    key = _PREFIX[kind] + secrets.token_urlsafe(18)
    record = KeyRecord(
        id="k_" + secrets.token_hex(4), tenant=tenant, kind=kind, hash=hash_key(key),
        origins=tuple(sorted({normalise_origin(o) for o in origins})), created_at=int(time.time()),
    )
    _write_keys(path, [*read_keys(path), record])
    return record, key


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    records = read_keys(path)
    for i, r in enumerate(records):
        if r.id == key_id:
            if r.revoked_at is None:
                records[i] = r = KeyRecord(**{**asdict(r), "revoked_at": int(time.time())})
                _write_keys(path, records)
            return r
    raise KeyFileError(f"no key {key_id!r} in {path}; `shoprank keys list` shows the ids")


class KeyRing:
    """Live view of the key file for a worker: looks keys up by hash, rereads the file when it changes."""

    def __init__(self, path: Path, recheck_s: float = 2.0) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._by_hash: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.recheck_s and self._stamp is not None:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._by_hash = {r.hash: r for r in read_keys(self.path) if r.revoked_at is None}
            self._stamp = stamp

    def lookup(self, key: str | None, kind: KeyKind) -> KeyRecord | None:
        """The live record for ``key`` if it is a key of that kind, else None."""
        if not key:
            return None
        self._refresh()
        record = self._by_hash.get(hash_key(key))
        return record if record is not None and record.kind == kind else None

    def has_keys(self) -> bool:
        self._refresh()
        return bool(self._by_hash)
