"""Errors of the models layer."""

from __future__ import annotations

from schemas.exceptions import ShoprankError

__all__ = ["ModelNotFound", "ModelError"]


class ModelError(ShoprankError, RuntimeError):
    """A model could not be built, loaded or run."""


class ModelNotFound(ModelError, FileNotFoundError):
    """No exported model where one was expected; the message names the command that makes one."""
