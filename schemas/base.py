"""The record base class and the orjson codec shared by every topic contract."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from schemas.exceptions import DecodeError, RejectReason

__all__ = ["Record", "decode", "encode", "validate", "TenantId", "Identifier", "Currency", "MAX_MESSAGE_BYTES"]

#: Default upper bound for a message on a shoprank topic: Kafka's default ``message.max.bytes``.
#: Larger payloads are rejected before parsing; topics with tighter limits pass ``max_bytes``.
MAX_MESSAGE_BYTES = 1_000_000

R = TypeVar("R", bound="Record")

#: Tenant ids are lower-case slugs: they become parts of keys, collection names and paths.
TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
#: Opaque ids (events, products, users, sessions): no whitespace, bounded.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]
#: ISO 4217 alphabetic currency code.
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class Record(BaseModel):
    """Base of every message contract.

    Unknown fields are ignored so that older consumers read newer producers' messages;
    ``schema_version`` lets a consumer refuse a major version it does not understand.
    """

    # strict: "5" is not an int and 1 is not a string; a contract that coerces hides producer bugs.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    #: The newest major version of this record that this code understands.
    SCHEMA_VERSION: ClassVar[int] = 1

    schema_version: int = Field(default=1, ge=1, description="Major version of this record's contract.")


def encode(record: Record) -> bytes:
    """Serialise a record to compact JSON bytes (orjson), dropping fields left at ``None``."""
    return orjson.dumps(record.model_dump(mode="json", exclude_none=True))


def decode(cls: type[R], data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> R:
    """Parse ``data`` as a ``cls`` record or raise :class:`DecodeError` with a stable reason.

    Never raises anything else, whatever the bytes: decoders sit at the edge of every stream.
    """
    if len(data) > max_bytes:
        raise DecodeError("payload_too_large", f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise DecodeError("invalid_utf8", f"bytes are not UTF-8 at offset {uexc.start}") from None
        raise DecodeError("invalid_json", str(exc)) from None
    return validate(cls, obj)


def validate(cls: type[R], obj: Any) -> R:
    """Validate an already-parsed JSON value as a ``cls`` record (see :func:`decode`)."""
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version > cls.SCHEMA_VERSION:
        raise DecodeError(
            "unsupported_schema_version",
            f"schema_version {version} is newer than {cls.SCHEMA_VERSION}; upgrade shoprank",
        )
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise _as_decode_error(exc) from None
    except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - defensive
        raise DecodeError("invalid_value", str(exc)) from None


def _as_decode_error(exc: ValidationError) -> DecodeError:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "(record)"
    kind = err["type"]
    reason: RejectReason
    if kind == "missing":
        reason = "missing_field"
    elif kind == "literal_error" and err["loc"] == ("type",):
        reason = "unknown_event_type"
    elif kind.endswith("_type") or kind.endswith("_parsing") or kind == "model_attributes_type":
        reason = "wrong_type"
    else:
        reason = "invalid_value"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return DecodeError(reason, f"{field}: {err['msg']}{more}")
