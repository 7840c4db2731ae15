"""Errors raised while decoding messages against the topic contracts."""

from __future__ import annotations

from typing import Literal

__all__ = ["ShoprankError", "DecodeError", "RejectReason"]

#: Closed set of reasons a message can be rejected for; dead letters carry one of these.
RejectReason = Literal[
    "payload_too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_event_type",
    "unsupported_schema_version",
    "future_timestamp",
    "unknown_tenant",
    "duplicate_event",
    "internal_error",
]


class ShoprankError(Exception):
    """Root of every error shoprank raises on purpose."""


class DecodeError(ShoprankError, ValueError):
    """A message's bytes do not satisfy its topic's contract.

    ``reason`` is a stable machine-readable code (see :data:`RejectReason`);
    ``detail`` is a human sentence that names the offending field.
    """

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail
