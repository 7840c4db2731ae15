"""Dead letters: messages a stream could not use, kept with the reason and their original bytes."""

from __future__ import annotations

import base64
import hashlib

from pydantic import Field

from schemas.base import Record
from schemas.exceptions import RejectReason

__all__ = ["DeadLetter", "MAX_KEPT_BYTES"]

#: Original bytes kept inline. Base64 grows data by a third, and the dead letter must itself fit
#: under the broker's message size limit; longer originals are cut here and remain, whole, at
#: their source topic, partition and offset for as long as that topic retains them.
MAX_KEPT_BYTES = 256 * 1024


class DeadLetter(Record):
    """One rejected message. The original key and value are base64 so any bytes survive JSON."""

    reason: RejectReason
    detail: str = Field(max_length=2000)
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    source_timestamp: int | None = Field(default=None, description="Broker timestamp of the original (epoch ms).")
    key_b64: str | None = None
    value_b64: str = Field(description="The original value, base64; cut to MAX_KEPT_BYTES if longer.")
    value_size: int = Field(ge=0, description="Length of the whole original value in bytes.")
    value_sha256: str = Field(description="SHA-256 (hex) of the whole original value.")
    value_truncated: bool = False
    agent: str = Field(description="Which agent rejected it.")
    tenant: str | None = Field(default=None, description="The tenant, when it could be read.")
    rejected_at: int = Field(ge=0)

    @classmethod
    def keeping(cls, value: bytes, key: bytes | None, **fields: object) -> DeadLetter:
        """A dead letter holding ``value`` and ``key`` (cut to :data:`MAX_KEPT_BYTES` when longer)."""
        kept = value[:MAX_KEPT_BYTES]
        return cls(
            value_b64=base64.b64encode(kept).decode("ascii"),
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            value_truncated=len(kept) < len(value),
            key_b64=None if key is None else base64.b64encode(key[:1024]).decode("ascii"),
            **fields,  # type: ignore[arg-type]
        )

    @property
    def value(self) -> bytes:
        """The original message bytes."""
        return base64.b64decode(self.value_b64)

    @property
    def key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)
