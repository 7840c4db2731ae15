"""Errors of the streaming layer. Messages say what to do next."""

from __future__ import annotations

from schemas.exceptions import ShoprankError

__all__ = ["ShoprankError", "BrokerUnavailable", "BrokerStartError", "UserInputError"]


class BrokerUnavailable(ShoprankError, ConnectionError):
    """No Kafka-protocol broker answered at the configured address."""

    def __init__(self, bootstrap: str, embedded: bool) -> None:
        hint = (
            "start one with `shoprank broker`"
            if embedded
            else "check the address, or unset SHOPRANK_KAFKA_BOOTSTRAP to use the embedded broker"
        )
        super().__init__(f"broker not reachable at {bootstrap} — {hint}")
        self.bootstrap = bootstrap


class BrokerStartError(ShoprankError, RuntimeError):
    """The embedded broker could not be started."""


class UserInputError(ShoprankError, ValueError):
    """A CLI argument or input file is unusable; the message names it and the fix."""
