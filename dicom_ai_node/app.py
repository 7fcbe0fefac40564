"""Wiring: the composition root; builds every stage from the settings and runs the loops.

    receive (SCP threads) -> store -> assemble loop -> route -> job workers (infer, encode)
    -> outbox -> delivery loop (one thread per destination) -> send

Every loop is bounded by a stop event and reads its work from the database, so stopping
or killing the process loses nothing that was acknowledged.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .assemble.sweep import Assembler
from .audit.node import NodeAudit
from .domain import AssociationSummary, BodyPart, Scope, SeriesInfo, SeriesSelection
from .errors import ConfigError
from .infer.decode import IsolatedDecoder
from .infer.registry import ModelRegistry, choose_device
from .infer.volume import Decode
from .metrics import NodeMetrics
from .pipeline import Pipeline
from .receive.gate import Limits, resolve_callers
from .receive.scp import ScpConfig, StorageSCP
from .receive.users import UserCheck
from .route.load import load_rules
from .route.rules import RuleSet
from .send.deliver import Deliverer, all_destinations
from .send.senders import DELIVER_INTERVAL_S, DestinationSenders
from .settings import NodeSettings
from .store.associations import record_association
from .store.db import Database, utcnow
from .store.files import FileStore
from .store.ingest import Ingest
from .store.jobs import instance_paths, requeue_running_jobs
from .store.outbox import due_destinations
from .store.routing import series_pk_of
from .tls import TlsFiles, client_context, server_context

if TYPE_CHECKING:  # torch is imported once a body-region model is loaded, not before
    from .infer.bodyregion import BodyRegionModels
    from .web.server import WebServer

__all__ = ["Node", "StoredSeriesRegions"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def _allowed_callers(settings: NodeSettings) -> dict[str, frozenset[str]] | None:
    """The AE table as an allow-list of callers, when the settings ask for one."""
    if not settings.dicom.accept_only_known_callers:
        return None
    hosts: dict[str, list[str]] = {}
    for entry in settings.ae_table:
        hosts.setdefault(entry.ae_title, []).append(entry.host)
    return resolve_callers(hosts)


def _user_check(
    settings: NodeSettings, on_refused: Callable[[str, str, str], None]
) -> UserCheck | None:
    """The User Identity check of ``dicom.user_identity`` (None when off)."""
    if settings.dicom.user_identity == "off":
        return None
    users = {u.username: u.password_hash for u in settings.users}
    return UserCheck(settings.dicom.user_identity, users, on_refused)


def _check_selections(rules: RuleSet, registry: ModelRegistry) -> None:
    """A study-scope model takes every accepted series in one job: ``select: each`` cannot
    apply to it (fail at start-up, naming the model)."""
    for manifest in registry:
        each = rules.selection(manifest.name) is SeriesSelection.EACH
        if each and manifest.input.scope is Scope.STUDY:
            raise ConfigError(
                f"{rules.source}: the rules of {manifest.name} say select: each, but the model "
                "takes a whole study (scope = study in its model.toml)"
            )


def _tls_files(settings: NodeSettings) -> TlsFiles | None:
    """The node's TLS identity and trust, when configured (``[tls]``)."""
    tls = settings.tls
    if not (tls.certificate and tls.private_key and tls.ca_file):
        return None
    return TlsFiles(
        settings.path(tls.certificate),
        settings.path(tls.private_key),
        settings.path(tls.ca_file),
        tls.client_certificates,
    )


@dataclass
class StoredSeriesRegions:
    """The body region of a stored series from its pixels: the assembler's classifier hook.

    Remembered per series and instance count (the model is deterministic), so a study's
    other series are not read again each time one of its series completes.

    Parameters
    ----------
    model:
        The image-based body-region models.
    db, files:
        Where the series' instances are indexed and stored.
    decode:
        Decodes compressed images (in a separate process); None decodes in this one.
    """

    model: BodyRegionModels
    db: Database
    files: FileStore
    decode: Decode | None = None
    _answers: dict[tuple[str, int], tuple[BodyPart, float] | None] = field(
        default_factory=dict, init=False, repr=False
    )

    def __call__(self, info: SeriesInfo) -> tuple[BodyPart, float] | None:
        """The region and confidence, or None when the model does not take the modality."""
        if not self.model.accepts(info.modality):
            return None
        key = (info.series_instance_uid, info.number_of_instances)
        if key not in self._answers:
            if len(self._answers) >= 1024:
                self._answers.clear()
            self._answers[key] = self._classify(info)
        return self._answers[key]

    def _classify(self, info: SeriesInfo) -> tuple[BodyPart, float] | None:
        series_pk = series_pk_of(self.db.session, info.series_instance_uid)
        if series_pk is None:
            return None
        paths = [self.files.absolute(p) for p in instance_paths(self.db.session, series_pk)]
        return self.model.classify_files(paths, self.decode)


class Node:
    """One running node: listener, assembler, workers and deliverer.

    Parameters
    ----------
    settings:
        The configuration.
    clock:
        Current UTC time; tests may pass their own.

    Raises
    ------
    ConfigError
        At construction, for invalid rules, manifests or settings (fail fast).
    """

    def __init__(self, settings: NodeSettings, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.db = Database(settings.database_url, settings.storage.db_lock_timeout_s)
        self.db.migrate()
        #: The node's metrics (its own registry), handed to every stage.
        self.metrics = metrics = NodeMetrics()
        metrics.add_destinations(all_destinations(settings))
        self.audit = NodeAudit(settings, self.db.session, clock)
        self.files = FileStore(
            settings.path(settings.storage.root),
            fsync=settings.storage.fsync,
            min_free_bytes=settings.storage.min_free_mb * MIB,
            spare_budget_bytes=settings.storage.spare_pool_mb * MIB,
            spare_max_bytes=settings.storage.spare_max_mb * MIB,
        )
        metrics.watch_storage(self.files.free_bytes, settings.storage.min_free_mb * MIB)
        device = choose_device(settings.infer.device, settings.infer.threads, settings.infer.bf16)
        self.registry = ModelRegistry(
            settings.path(settings.infer.models_dir), device, metrics=metrics
        )
        rules_path = settings.path(settings.route.rules_file)
        if not rules_path.is_file():
            raise ConfigError(f"route.rules_file {rules_path} not found")
        self.rules = load_rules(
            rules_path, list(self.registry.manifests), self.registry.unavailable
        )
        _check_selections(self.rules, self.registry)
        tls_files = _tls_files(settings)
        infer = settings.infer
        self.decoder = (
            IsolatedDecoder(infer.decoder_memory_mb, infer.decode_timeout_s)
            if infer.isolate_decoding
            else None
        )
        decode = self.decoder.decode if self.decoder is not None else None
        #: The image-based body-region models, which the assembler asks (None without any).
        self.body_region = body_region = self.registry.body_region_model()
        assemble = settings.assemble
        self.assembler = Assembler(
            self.db,
            self.rules,
            self.registry.specs,
            {m.name: m.version for m in self.registry},
            assemble.quiet_period_s,
            assemble.study_quiet_period_s,
            assemble.late_instance_policy,
            StoredSeriesRegions(body_region, self.db, self.files, decode)
            if body_region is not None
            else None,
            metrics=metrics,
        )
        self.pipeline = Pipeline(
            settings, self.db, self.files, self.registry, clock, decode=decode, metrics=metrics
        )
        self.deliverer = Deliverer(
            settings,
            self.db,
            self.files,
            clock,
            tls_client=client_context(tls_files) if tls_files else None,
            on_delivered=self.audit.delivered,
            metrics=metrics,
        )
        tls_server = server_context(tls_files) if tls_files and settings.tls.enabled else None
        cfg = settings.dicom
        self.scp = StorageSCP(
            ScpConfig(
                ae_title=cfg.ae_title,
                host=cfg.host,
                port=cfg.port,
                require_called_ae_title=cfg.require_called_ae_title,
                max_pdu=cfg.max_pdu,
                limits=Limits(
                    max_message_bytes=cfg.max_instance_mb * MIB,
                    max_associations=cfg.max_associations,
                    max_associations_per_address=cfg.max_associations_per_address,
                    max_pending_connections=cfg.max_pending_connections,
                    request_timeout_s=cfg.association_request_timeout_s,
                    allowed_callers=_allowed_callers(settings),
                    on_unknown_caller=self.audit.unknown_caller,
                    on_wrong_called=self.audit.wrong_called,
                    users=_user_check(settings, self.audit.user_refused),
                ),
                acse_timeout_s=cfg.acse_timeout_s,
                dimse_timeout_s=cfg.dimse_timeout_s,
                network_timeout_s=cfg.network_timeout_s,
                tls=tls_server,
                tls_port=settings.tls.port,
                plaintext=settings.tls.plaintext,
                on_tls_failure=self.audit.tls_failure,
                on_association_end=self._association_ended,
            ),
            Ingest(
                self.files,
                self.db.session,
                clock,
                late_policy=settings.assemble.late_instance_policy,
            ),
            metrics=metrics,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._senders = DestinationSenders(self.deliverer.deliver)
        self._web: WebServer | None = None

    def _association_ended(self, summary: AssociationSummary) -> None:
        """Keep the association for the senders screen (the newest 10,000)."""
        record_association(
            self.db.session,
            started_at=summary.started_at,
            ended_at=summary.ended_at,
            calling_ae_title=summary.calling_ae_title,
            called_ae_title=summary.called_ae_title,
            address=summary.address,
            instances=summary.instances,
            outcome=summary.outcome,
            reason=summary.reason,
        )

    # -- loops ------------------------------------------------------------------------------
    def _loop(self, name: str, step: Callable[[], bool], idle_s: float) -> None:
        """Run ``step`` until stopped; wait ``idle_s`` when it found nothing to do."""
        while not self._stop.is_set():
            try:
                busy = step()
            except Exception:
                log.exception("%s step failed", name)
                busy = False
            if not busy:
                self._stop.wait(idle_s)

    def _assemble_step(self) -> bool:
        self.assembler.sweep(self.clock())
        self.audit.received()  # studies whose series are complete (PS3.15 A.5.3.7)
        return False

    def _job_step(self) -> bool:
        return self.pipeline.run_one_job()

    def _deliver_step(self) -> bool:
        """Start one sender per destination with due work; a slow one never blocks the others."""
        self._senders.start_due(due_destinations(self.db.session, self.clock()))
        return False

    def start(self) -> None:
        """Reconcile after a crash, load the models, start listening and the loops."""
        swept = self.files.sweep_temp()
        requeued = requeue_running_jobs(self.db.session, self.clock())
        if swept or requeued:
            log.info(
                "recovered after restart: %d temp file(s) removed, %d job(s) requeued",
                swept,
                requeued,
            )
        self.audit.start()  # Application Start, before the listener can refuse a caller
        self.registry.warm_up()
        self.files.start_spares()
        self.scp.start()
        loops: list[tuple[str, Callable[[], bool], float]] = [
            ("assemble", self._assemble_step, self.settings.assemble.sweep_interval_s),
            ("deliver", self._deliver_step, DELIVER_INTERVAL_S),
        ]
        loops += [(f"worker-{i}", self._job_step, 0.5) for i in range(self.settings.infer.workers)]
        for name, step, idle in loops:
            thread = threading.Thread(
                target=self._loop, args=(name, step, idle), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info(
            "node started",
            extra={
                "ae_title": self.settings.dicom.ae_title,
                "port": self.scp.port,
                "models": len(self.registry),
            },
        )

    def start_web(self) -> tuple[str, Path | None]:
        """Start the HTTP service (``[web]``); its URL, and the first admin's password file
        when this start made that user (None otherwise)."""
        from .app_web import start_web

        self._web, first = start_web(self)
        return self._web.url, first

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop listening and let the loops finish their current step."""
        self._stop.set()
        if self._web is not None:
            self._web.stop()
        self.scp.stop()
        self.files.stop_spares()
        for thread in self._threads:
            thread.join(timeout_s)
        self._senders.join(timeout_s)
        if self.decoder is not None:
            self.decoder.close()
        self.audit.stop()  # what was received meanwhile, then Application Stop
        self.db.dispose()
        log.info("node stopped")

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from a signal handler)."""
        while not self._stop.wait(1.0):
            pass
