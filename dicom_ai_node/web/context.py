"""Web: what the HTTP service is handed by the composition root.

The web stage reads and changes state only through store functions; what needs another
stage (a C-ECHO to a destination, routing a stored study, the models loaded, the
listener) comes in as callables of :class:`Backend`, built in :mod:`dicom_ai_node.app`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit.operator import OperatorAudit
from ..metrics import NodeMetrics
from ..settings import NodeSettings
from ..store.db import Sessions
from .stow_store import StowIngress

__all__ = ["Backend", "EchoAnswer", "ModelInfo", "WebContext", "ctx_of"]


@dataclass(frozen=True)
class EchoAnswer:
    """The outcome of a C-ECHO to a destination (PS3.7 9.1.5)."""

    ok: bool
    status: int | None
    message: str
    seconds: float


@dataclass(frozen=True)
class ModelInfo:
    """A model the node has installed.

    Attributes
    ----------
    name, version, description:
        From its manifest (``model.toml``).
    device:
        Where it runs (empty when it cannot run here).
    loaded:
        Whether its weights are loaded now.
    available:
        False when it cannot run here (the Python package its weights come with is not
        installed): never routed to, its rules skipped.
    unavailable_reason:
        Why it cannot run here; empty when it can.
    """

    name: str
    version: str
    device: str
    loaded: bool
    description: str
    available: bool = True
    unavailable_reason: str = ""


def _no_echo(destination: str) -> EchoAnswer:
    return EchoAnswer(False, None, "C-ECHO is not available in this process", 0.0)


def _no_explain(study_instance_uid: str) -> str:
    return "routing explanations are not available in this process"


@dataclass(frozen=True)
class Backend:
    """Callables into other stages, built by the composition root.

    Attributes
    ----------
    echo:
        C-ECHO a destination (``AE@HOST:PORT``).
    explain:
        What routing would do with a stored study now (``route explain``'s text).
    models:
        The installed models, those that cannot run here too (with the reason).
    listener:
        The DICOM listener's AE title, address and ports.
    destinations:
        The configured destinations (``AE@HOST:PORT``), whether or not results went there.
    """

    echo: Callable[[str], EchoAnswer] = _no_echo
    explain: Callable[[str], str] = _no_explain
    models: Callable[[], list[ModelInfo]] = list
    listener: Callable[[], dict[str, object]] = dict
    destinations: Callable[[], list[str]] = list


@dataclass(frozen=True)
class WebContext:
    """Everything the HTTP service needs.

    Parameters
    ----------
    settings:
        The node's settings (``[web]``, ``[send]``, the AE table).
    sessions:
        The index.
    metrics:
        The node's metrics (``/metrics``).
    audit:
        Records logins, actions and refused requests.
    clock:
        Current UTC time.
    backend:
        Callables into the other stages.
    audit_log:
        The local audit log (the audit screen reads it).
    storage_root:
        Where instances and results are stored (the preview reads them).
    tls:
        Whether the service is served over TLS (cookies are then ``Secure``).
    stow:
        What STOW-RS stores with (None: the routes answer 503).
    """

    settings: NodeSettings
    sessions: Sessions
    metrics: NodeMetrics
    audit: OperatorAudit
    clock: Callable[[], dt.datetime]
    backend: Backend = field(default_factory=Backend)
    audit_log: Path | None = None
    storage_root: Path | None = None
    tls: bool = False
    stow: StowIngress | None = None


def ctx_of(request: Any) -> WebContext:
    """The context of the application serving ``request`` (a Starlette request)."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, WebContext)
    return ctx
