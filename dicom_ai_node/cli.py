"""Wiring: the command line (serve, init, models, route explain, send, jobs, users, tokens)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from . import __version__
from .cli_accounts import add_account_commands, read_secret
from .cli_models import add_model_commands, scan_series
from .errors import ConfigError, DeliveryError, NodeError
from .log import configure_logging
from .settings import NodeSettings, load_settings, render_config

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> NodeSettings:
    config = args.config or (
        Path("dicom-ai-node.toml") if Path("dicom-ai-node.toml").is_file() else None
    )
    return load_settings(config)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGINT/SIGTERM."""
    from .app import Node

    configure_logging(args.log_level)
    node = Node(_settings(args))

    def _stop(signum: int, _frame: FrameType | None) -> None:
        node._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    node.start()
    s = node.settings.dicom
    models = ", ".join(f"{m.name} {m.version}" for m in node.registry) or "none"
    print(
        f"dicom-ai-node {__version__} listening as {s.ae_title} on {s.host}:{node.scp.port}; "
        f"models: {models}",
        flush=True,
    )
    try:
        if node.settings.web.enabled:
            url, first = node.start_web()
            print(f"operator window at {url}ui/ (API {url}api/v1/, metrics {url}metrics)")
            if first is not None:
                print(f"first start: user 'admin' made; its password is in {first}", flush=True)
        sys.stdout.flush()
        node.wait()
    finally:  # a web port that is taken stops the DICOM side too, cleanly
        node.stop()
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write a commented configuration file."""
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"{target} exists; use --force to overwrite", file=sys.stderr)
        return 1
    target.write_text(render_config(), "utf-8")
    print(f"wrote {target}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Send every DICOM file under PATH to AE@HOST:PORT with a progress bar."""
    from .send.scu import Peer, send_datasets

    peer = Peer.parse(args.to)
    paths = [p for group in scan_series(Path(args.path)).values() for p in group]
    if not paths:
        print(f"no DICOM files under {args.path}", file=sys.stderr)
        return 1

    def progress(done: int, total: int) -> None:
        width = 40
        filled = int(width * done / max(total, 1))
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
            end="",
            file=sys.stderr,
            flush=True,
        )

    try:
        outcomes = send_datasets(paths, peer, calling_ae_title=args.calling_ae, progress=progress)
    except DeliveryError as exc:
        print(f"\nsend failed: {exc}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if not o.delivered]
    print(f"\nsent {len(outcomes) - len(failed)} of {len(paths)} instance(s) to {args.to}")
    for o in failed[:20]:
        print(f"  failed {o.sop_instance_uid}: status 0x{(o.status or 0):04X} {o.message}")
    return 1 if failed else 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """What happened to each study and why (UIDs only)."""
    from .store.db import Database
    from .store.report import study_report

    settings = _settings(args)
    db = Database(settings.database_url, settings.storage.db_lock_timeout_s)
    db.migrate()
    print(study_report(db.session, limit=args.limit))
    db.dispose()
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print the scrypt hash of a passcode for ``[[users]] password_hash``.

    The passcode is read from standard input (one line), or asked for on a terminal, so
    that it never appears in the shell's history or the process list.
    """
    from .passwords import hash_password

    try:
        password = read_secret("passcode")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not password:
        print("empty passcode", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test)."""
    parser = argparse.ArgumentParser(prog="dicom-ai-node", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "-c", "--config", type=Path, help="settings file (default ./dicom-ai-node.toml if present)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the node")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("init", help="write a commented configuration file")
    p.add_argument("path", nargs="?", default="dicom-ai-node.toml")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_init)
    add_model_commands(sub, _settings_first)
    p = sub.add_parser("send", help="send a folder of DICOM files")
    p.add_argument("path")
    p.add_argument("--to", required=True, help="AE@HOST:PORT")
    p.add_argument("--calling-ae", default="DICOM_AI_NODE")
    p.set_defaults(func=cmd_send)
    p = sub.add_parser("jobs", help="what happened to each study and why")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_jobs)
    p = sub.add_parser("hash-password", help="hash a passcode (stdin) for [[users]] password_hash")
    p.set_defaults(func=cmd_hash_password)
    add_account_commands(sub, _with_settings)
    return parser


def _with_settings(
    handler: Callable[[argparse.Namespace, NodeSettings], int],
) -> Callable[[argparse.Namespace], int]:
    """A command that gets the settings; a refused value is an error message, exit 1."""

    def run(args: argparse.Namespace) -> int:
        settings = _settings(args)
        try:
            return handler(args, settings)
        except (ValueError, NodeError) as exc:
            if isinstance(exc, ConfigError):
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _settings_first(
    handler: Callable[[argparse.Namespace, NodeSettings], int],
) -> Callable[[argparse.Namespace], int]:
    """A command that gets the settings; what it raises is left to :func:`main`."""

    def run(args: argparse.Namespace) -> int:
        return handler(args, _settings(args))

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dicom-ai-node``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
