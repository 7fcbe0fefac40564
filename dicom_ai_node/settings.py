"""Core: the settings, one frozen tree from a TOML file and ``DICOM_AI_NODE_<SECTION>_<KEY>``.

Every field carries help text in its metadata; ``dicom-ai-node init`` writes it out as a
commented configuration file and a test checks that no field lacks it. The sections live
in :mod:`.settings_peers` (listener, TLS, web, AE table, users) and
:mod:`.settings_sections` (the stages'); this module holds the tree, its loader and
:func:`render_config`, and re-exports them all.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from .errors import ConfigError
from .passwords import USER_IDENTITY_MODES
from .result_kinds import DEFAULT_RESULTS, RESULT_KINDS
from .settings_peers import WEB_ROLES, DicomSettings, KnownAE, KnownUser, TlsSettings, WebSettings
from .settings_sections import (
    DESTINATION_AUTH,
    DESTINATION_PROTOCOLS,
    AssembleSettings,
    AuditSettings,
    Destination,
    InferSettings,
    PrivacySettings,
    RouteSettings,
    SendSettings,
    StorageSettings,
    _f,
)

__all__ = [
    "DESTINATION_AUTH",
    "DESTINATION_PROTOCOLS",
    "WEB_ROLES",
    "AssembleSettings",
    "AuditSettings",
    "Destination",
    "DicomSettings",
    "InferSettings",
    "KnownAE",
    "KnownUser",
    "NodeSettings",
    "PrivacySettings",
    "RouteSettings",
    "SendSettings",
    "StorageSettings",
    "TlsSettings",
    "WebSettings",
    "load_settings",
    "render_config",
]

ENV_PREFIX = "DICOM_AI_NODE_"
T = TypeVar("T")


@dataclass(frozen=True)
class NodeSettings:
    """The whole configuration of one node."""

    dicom: DicomSettings = field(default_factory=DicomSettings, metadata={"help": "Listener."})
    storage: StorageSettings = field(default_factory=StorageSettings, metadata={"help": "Storage."})
    assemble: AssembleSettings = field(
        default_factory=AssembleSettings, metadata={"help": "Completion."}
    )
    route: RouteSettings = field(default_factory=RouteSettings, metadata={"help": "Routing."})
    infer: InferSettings = field(default_factory=InferSettings, metadata={"help": "Inference."})
    send: SendSettings = field(default_factory=SendSettings, metadata={"help": "Delivery."})
    audit: AuditSettings = field(
        default_factory=AuditSettings, metadata={"help": "Audit trail (IHE ATNA)."}
    )
    tls: TlsSettings = field(default_factory=TlsSettings, metadata={"help": "DICOM over TLS."})
    web: WebSettings = field(
        default_factory=WebSettings, metadata={"help": "HTTP service: screens, API, metrics."}
    )
    privacy: PrivacySettings = field(
        default_factory=PrivacySettings, metadata={"help": "De-identification."}
    )
    ae_table: tuple[KnownAE, ...] = field(
        default=(),
        metadata={"help": "Known peers: [[ae_table]] entries with ae_title, host, port."},
    )
    users: tuple[KnownUser, ...] = field(
        default=(),
        metadata={"help": "Users for dicom.user_identity: [[users]] username, password_hash."},
    )
    base_dir: str = _f(
        ".", "Folder that relative paths are resolved against (the config's folder)."
    )

    def __post_init__(self) -> None:
        if self.dicom.user_identity not in USER_IDENTITY_MODES:
            raise ConfigError(
                f"dicom.user_identity {self.dicom.user_identity!r} is not one of "
                f"{', '.join(USER_IDENTITY_MODES)}"
            )
        if self.dicom.user_identity != "off" and not self.users:
            raise ConfigError("dicom.user_identity needs at least one [[users]] entry")
        tls = self.tls
        identity = bool(tls.certificate and tls.private_key and tls.ca_file)
        for entry in self.ae_table:
            if entry.tls and not identity:
                raise ConfigError(
                    f"ae_table entry {entry.ae_title}: tls = true needs tls.certificate,"
                    " tls.private_key and tls.ca_file"
                )
        for dest in self.send.destinations:
            if dest.tls and not identity:
                raise ConfigError(
                    f"send.destinations entry {dest.address!r}: tls = true needs "
                    "tls.certificate, tls.private_key and tls.ca_file"
                )

    def path(self, value: str) -> Path:
        """Resolve a configured path against ``base_dir``."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def database_url(self) -> str:
        """The index URL; SQLite beside the storage root when none is configured."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.path(self.storage.root).parent / 'node.db'}"

    def known_ae(self, ae_title: str) -> KnownAE | None:
        """The AE table entry for ``ae_title``, if any."""
        for entry in self.ae_table:
            if entry.ae_title == ae_title.strip():
                return entry
        return None

    def destination(self, key: str) -> Destination:
        """How to send to the destination the outbox names ``key``, and what it gets.

        In this order: a ``send.destinations`` table with that address; the AE table
        entry of that ``AE@HOST:PORT`` (its ``results`` and ``tls``); a string entry of
        ``send.destinations``, or a key no longer configured (rows written before a
        change), with the defaults: DIMSE, or DICOMweb for an http(s) URL, and
        :data:`~dicom_ai_node.result_kinds.DEFAULT_RESULTS`.
        """
        key = key.strip()
        for dest in self.send.destinations:
            plain = dest.protocol == "dimse" and dest == Destination(address=dest.address)
            if dest.address == key and not plain:
                return dest
        for entry in self.ae_table:
            if entry.address == key:
                return Destination(address=key, results=entry.results, tls=entry.tls)
        web = key.lower().startswith(("http://", "https://"))
        return Destination(address=key, protocol="dicomweb" if web else "dimse")


def _convert(value: Any, typ: Any, where: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if typ in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return typ(value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            item = typ.__args__[0]
            if dataclasses.is_dataclass(item):  # send.destinations: strings or tables
                return tuple(_entry(item, v, where) for v in items if v != "")  # type: ignore[arg-type]
            return tuple(str(v).strip() for v in items if str(v).strip())
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid {typ}") from exc
    return value


def _entry(cls: type[T], value: Any, where: str) -> T:
    """One entry of a list of strings or tables (``send.destinations``)."""
    if isinstance(value, Mapping):
        return _build(cls, value, {}, where.upper().replace(".", "_") + "_")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {value!r} is neither an address nor a table")
    return cls(value.strip())  # type: ignore[call-arg]


#: Arrays of tables in the file ([[ae_table]], [[users]]) and their entry types.
_TABLES: dict[str, type[Any]] = {"ae_table": KnownAE, "users": KnownUser}


def _build(cls: type[T], data: Mapping[str, Any], env: Mapping[str, str], prefix: str) -> T:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{prefix.lower() or 'top'}]: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        typ = hints[f.name]
        env_key = f"{ENV_PREFIX}{prefix}{f.name}".upper()
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _build(typ, data.get(f.name, {}), env, f"{prefix}{f.name}_")  # type: ignore[arg-type]
        elif f.name in _TABLES:
            kwargs[f.name] = tuple(
                _build(_TABLES[f.name], e, {}, f"{f.name.upper()}_") for e in data.get(f.name, [])
            )
        elif env_key in env:
            kwargs[f.name] = _convert(env[env_key], typ, env_key)
        elif f.name in data:
            kwargs[f.name] = _convert(data[f.name], typ, f"{prefix.lower()}{f.name}")
    return cls(**kwargs)


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> NodeSettings:
    """Read settings from a TOML file (optional) and environment overrides.

    Parameters
    ----------
    path:
        A TOML file as written by ``dicom-ai-node init``; relative paths in it are resolved
        against its folder. ``None`` uses defaults relative to the current directory.
    env:
        Environment to read ``DICOM_AI_NODE_<SECTION>_<KEY>`` overrides from
        (default ``os.environ``).

    Raises
    ------
    ConfigError
        On unknown keys, wrong types or invalid values, naming the key.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        data.setdefault("base_dir", str(Path(path).resolve().parent))
    return _build(NodeSettings, data, env, "")


def _toml_value(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        pairs = (
            f"{f.name} = {_toml_value(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
        return "{ " + ", ".join(pairs) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(settings: NodeSettings | None = None) -> str:
    """Write settings as a commented TOML file (what ``dicom-ai-node init`` prints)."""
    settings = settings or NodeSettings()
    lines = [
        "# dicom-ai-node configuration. Every key is optional; shown with its default.",
        f"# Each key can be overridden by an environment variable {ENV_PREFIX}<SECTION>_<KEY>.",
        "",
    ]
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"[{f.name}]  # {f.metadata['help']}")
            for sub in dataclasses.fields(value):
                lines.append(f"# {sub.metadata['help']}")
                lines.append(f"{sub.name} = {_toml_value(getattr(value, sub.name))}")
            lines.append("")
    lines += [
        "# Known peers. Results go back to the AE that sent a study when it is listed here.",
        f"# results: what it gets, from {', '.join(RESULT_KINDS)} (default"
        f" {', '.join(DEFAULT_RESULTS)}):",
        *(f"#   {k.name}: {k.description}" for k in RESULT_KINDS.values()),
        "# [[ae_table]]",
        '# ae_title = "PACS"',
        '# host = "10.0.0.5"',
        "# port = 104",
        '# results = ["SEG", "SR", "SC", "KOS"]',
        "",
        "# send.destinations entries are AE@HOST:PORT strings or one-line tables, e.g.",
        '# destinations = ["ARCHIVE@10.0.0.6:104", { address = "VIEWER@10.0.0.7:104",'
        ' results = ["SC", "KOS", "PDF"] }]',
        "# or, in place of that line, one [[send.destinations]] table per destination:",
        "# [[send.destinations]]",
        '# address = "https://pacs.example.org/dicom-web"',
        '# protocol = "dicomweb"',
        '# results = ["SEG", "SR", "GSPS"]',
        '# auth = "bearer"',
        '# credentials_file = "secrets/pacs-token"',
        '# ca_file = "pki/ca.pem"',
        "# The keys of a destination table:",
        *(f"#   {f.name}: {f.metadata['help']}" for f in dataclasses.fields(Destination)),
        "",
        "# Users for dicom.user_identity (hash: dicom-ai-node hash-password).",
        "# [[users]]",
        '# username = "modality1"',
        '# password_hash = "scrypt$16384$8$1$..."',
        "",
    ]
    return "\n".join(lines)
