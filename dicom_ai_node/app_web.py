"""Wiring: the web service's part of the composition root.

Builds the callables the web stage gets for what lives in other stages (C-ECHO, routing
a stored study, the models, the listener, the receive stage's checks STOW-RS stores
with) and starts the HTTP listener beside the DICOM one, with the node's certificate
when ``[tls]`` is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.uid import AllTransferSyntaxes

from .assemble.sweep import info_of
from .audit.node import audit_paths
from .audit.operator import OperatorAudit
from .cli_accounts import first_admin
from .infer.runner import Device
from .receive.attrs import PARSE_ERRORS, inflated_size_within, read_series
from .receive.scp import storage_sop_classes
from .route.explain import format_study_routing
from .route.router import route_study
from .send.deliver import all_destinations
from .send.echo import echo
from .store.routing import stored_study, study_pk_of
from .web.app import create_app
from .web.context import Backend, EchoAnswer, ModelInfo, WebContext
from .web.metrics import IndexCollector
from .web.server import WebServer
from .web.stow_store import InstanceChecks, StowIngress

if TYPE_CHECKING:
    from .app import Node
    from .infer.registry import ModelRegistry

__all__ = ["backend_of", "model_infos", "start_web", "stow_ingress", "web_context"]


def _device_text(device: Device) -> str:
    """How the status screen names a device: ``cpu, 2 threads, bf16``."""
    parts = [device.kind]
    if device.kind == "cpu":
        parts.append(f"{device.cpu_threads} threads")
        if device.bf16:
            parts.append("bf16")
    return ", ".join(parts)


def model_infos(registry: ModelRegistry) -> list[ModelInfo]:
    """The registry's models as the web stage shows them: those that can run here, then
    those that cannot, with the reason (``models list`` says the same)."""
    device = _device_text(registry.device)
    infos = [
        ModelInfo(m.name, m.version, device, registry.is_warm(m.name), m.description)
        for m in registry
    ]
    for name, reason in sorted(registry.unavailable.items()):
        manifest = registry.unavailable_manifests.get(name)
        infos.append(
            ModelInfo(
                name,
                manifest.version if manifest is not None else "",
                "",
                False,
                manifest.description if manifest is not None else "",
                available=False,
                unavailable_reason=reason,
            )
        )
    return infos


def backend_of(node: Node) -> Backend:
    """The web stage's callables into the node's other stages."""
    settings = node.settings

    def echo_destination(destination: str) -> EchoAnswer:
        tls = node.deliverer.tls_client if node.deliverer.wants_tls(destination) else None
        answer = echo(
            destination,
            calling_ae_title=settings.send.calling_ae_title or settings.dicom.ae_title,
            timeout_s=min(settings.send.timeout_s, 10.0),
            tls=tls,
        )
        return EchoAnswer(answer.ok, answer.status, answer.message, answer.seconds)

    def explain(study_instance_uid: str) -> str:
        pk = study_pk_of(node.db.session, study_instance_uid)
        study = stored_study(node.db.session, pk) if pk is not None else None
        if study is None:
            return f"study {study_instance_uid} is not stored"
        infos = [info_of(s) for s in study.series]
        answers = node.assembler.region_answers(infos)
        return format_study_routing(route_study(infos, node.rules, node.registry.specs, answers))

    def models() -> list[ModelInfo]:
        return model_infos(node.registry)

    def listener() -> dict[str, object]:
        cfg = settings.dicom
        return {
            "ae_title": cfg.ae_title,
            "host": cfg.host,
            "port": node.scp.port,
            "tls_port": node.scp.tls_port if settings.tls.enabled else None,
        }

    def destinations() -> list[str]:
        return all_destinations(settings)

    return Backend(echo_destination, explain, models, listener, destinations)


def stow_ingress(node: Node) -> StowIngress:
    """What STOW-RS stores with: the C-STORE handler's ingest (one lock per SOP Instance
    across both), the receive stage's reading and accepted SOP Classes and transfer
    syntaxes, and ``dicom.max_instance_mb`` as the bound of one data set."""
    checks = InstanceChecks(
        read=read_series,
        parse_errors=PARSE_ERRORS,
        sop_classes=frozenset(storage_sop_classes()),
        transfer_syntaxes=frozenset(str(uid) for uid in AllTransferSyntaxes),
        inflated_within=inflated_size_within,
    )
    max_bytes = node.settings.dicom.max_instance_mb * 1024 * 1024
    return StowIngress(node.scp.ingest, checks, max_bytes, node.metrics)


def web_context(node: Node) -> WebContext:
    """What the HTTP service of ``node`` is handed: its settings, index, metrics, audit."""
    settings = node.settings
    audit = node.audit
    return WebContext(
        settings=settings,
        sessions=node.db.session,
        metrics=node.metrics,
        audit=OperatorAudit(audit.trail, audit.source, audit.node, node.clock),
        clock=node.clock,
        backend=backend_of(node),
        audit_log=audit_paths(settings)[0] if settings.audit.local_log else None,
        storage_root=settings.path(settings.storage.root),
        tls=settings.tls.enabled,
        stow=stow_ingress(node),
    )


def start_web(node: Node) -> tuple[WebServer, Path | None]:
    """Start the HTTP service of ``node``; returns it and the first admin's password file
    when this start made that user.

    The queue gauges read from the index join the node's metrics here, once per node.
    """
    settings = node.settings
    ctx = web_context(node)
    tls = settings.tls
    app = create_app(ctx)
    server = WebServer(
        app,
        settings.web.host,
        settings.web.port,
        certificate=settings.path(tls.certificate) if tls.enabled else None,
        private_key=settings.path(tls.private_key) if tls.enabled else None,
    )
    node.metrics.registry.register(IndexCollector(app.state.status.get))
    password_file = first_admin(settings, node.db)
    server.start()
    return server, password_file
