"""Core: the error hierarchy; each edge turns these into a DIMSE status or exit code once."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "DeliveryError",
    "EncodeError",
    "InferenceError",
    "NodeError",
    "NotFound",
    "PrivacyError",
    "StorageError",
    "StorageFullError",
]


class NodeError(Exception):
    """Base class of every error the node raises on purpose."""


class ConfigError(NodeError, ValueError):
    """Settings, rules or a model manifest are invalid; the message names the file and key."""


class StorageError(NodeError):
    """An instance could not be written or indexed; nothing was kept."""


class StorageFullError(StorageError):
    """The storage volume is below its free-space reserve or returned ENOSPC."""


class InferenceError(NodeError):
    """A model failed to load or run."""


class EncodeError(NodeError):
    """A result object could not be built or failed validation."""


class DeliveryError(NodeError):
    """A result could not be delivered; ``status`` is the DIMSE status when one came back."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(NodeError):
    """What an operator's request names does not exist (the web answers 404)."""


class Conflict(NodeError):
    """An operator's action does not apply to the object in its present state (the web: 409)."""


class PrivacyError(NodeError):
    """An instance cannot be de-identified, or a result cannot be mapped back to its study."""
