"""Privacy requests: a shopper to be forgotten."""

from __future__ import annotations

from pydantic import Field

from schemas.base import Record, TenantId

__all__ = ["ForgetUser"]


class ForgetUser(Record):
    """Forget one shopper of one tenant. Keyed ``tenant:user_key`` on a compacted topic, kept for good.

    ``user_key`` is the keyed hash of the pixel's user id (what the collector publishes after ``h:``),
    never the id itself, so the privacy topic holds no more than the event topics do.
    """

    tenant: TenantId
    user_key: str = Field(pattern=r"^[0-9a-f]{32}$", description="Keyed BLAKE2b-128 of the user id, hex.")
    requested_at: int = Field(ge=0, description="Epoch ms.")
