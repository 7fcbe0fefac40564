"""Wiring: the web service's accounts from the shell (``users`` and ``tokens`` commands).

Passwords are read from standard input (one line) or asked for on a terminal, never taken
as arguments, so they stay out of shell histories and process lists. A token's text is
printed once, when it is made; the index keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from .settings import WEB_ROLES, NodeSettings
from .store import accounts
from .store.db import Database, utcnow

__all__ = ["add_account_commands", "first_admin", "read_secret"]

#: The user made at the first start when there is none, and its password's file.
FIRST_ADMIN = "admin"


def _database(settings: NodeSettings) -> Database:
    db = Database(settings.database_url, settings.storage.db_lock_timeout_s)
    db.migrate()
    return db


def read_secret(word: str = "password") -> str:
    """A password from standard input (one line), or asked twice on a terminal, so that it
    never appears in a shell's history or the process list.

    Raises
    ------
    ValueError
        When the two answers on a terminal differ.
    """
    if sys.stdin.isatty():
        password = getpass.getpass(f"{word}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def first_admin(settings: NodeSettings, db: Database) -> Path | None:
    """Make user ``admin`` with a random password when the node has no user yet.

    The password goes to ``<storage root>/../web/initial-admin-password`` (mode 0600), never
    to a log; returns that file's path, or None when users exist.
    """
    if accounts.list_users(db.session):
        return None
    password = secrets.token_urlsafe(18)
    folder = settings.path(settings.storage.root).parent / "web"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "initial-admin-password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    accounts.add_user(db.session, FIRST_ADMIN, password, "admin", utcnow())
    return path


def cmd_users(args: argparse.Namespace, settings: NodeSettings) -> int:
    """users add / list / remove / passwd."""
    db = _database(settings)
    try:
        if args.users_cmd == "list":
            for user in accounts.list_users(db.session):
                state = " (disabled)" if user.disabled else ""
                print(f"{user.username}\t{user.role}{state}")
        elif args.users_cmd == "add":
            accounts.add_user(db.session, args.name, read_secret(), args.role, utcnow())
            print(f"user {args.name} added ({args.role})")
        elif args.users_cmd == "passwd":
            accounts.set_password(db.session, args.name, read_secret())
            print(f"password of {args.name} changed")
        else:
            accounts.remove_user(db.session, args.name)
            print(f"user {args.name} removed")
    finally:
        db.dispose()
    return 0


def cmd_tokens(args: argparse.Namespace, settings: NodeSettings) -> int:
    """tokens add / list / revoke."""
    db = _database(settings)
    try:
        now = utcnow()
        if args.tokens_cmd == "list":
            for t in accounts.list_tokens(db.session):
                print(f"{t.pk}\t{t.name}\t{t.role}\t{_token_state(t, now)}")
        elif args.tokens_cmd == "add":
            expires = now + dt.timedelta(days=args.days) if args.days else None
            pk, text = accounts.add_token(db.session, args.name, args.role, expires, "", now)
            print(f"token {pk} ({args.role}); shown only now:\n{text}")
        else:
            accounts.revoke_token(db.session, args.id, now)
            print(f"token {args.id} revoked")
    finally:
        db.dispose()
    return 0


def _token_state(token: Any, now: dt.datetime) -> str:
    if token.revoked_at is not None:
        return f"revoked {token.revoked_at:%Y-%m-%d %H:%M}"
    if token.expires_at is not None:
        word = "expired" if token.expires_at <= now else "expires"
        return f"{word} {token.expires_at:%Y-%m-%d %H:%M}"
    return "no expiry"


def add_account_commands(sub: Any, run: Any) -> None:
    """Add ``users`` and ``tokens`` to the command line; ``run(handler)`` binds settings."""
    users = sub.add_parser("users", help="web service users").add_subparsers(
        dest="users_cmd", required=True
    )
    users.add_parser("list", help="list users").set_defaults(func=run(cmd_users))
    p = users.add_parser("add", help="add a user (password from stdin or a prompt)")
    p.add_argument("name")
    p.add_argument("--role", choices=WEB_ROLES, default="viewer")
    p.set_defaults(func=run(cmd_users))
    p = users.add_parser("passwd", help="change a user's password (stdin or a prompt)")
    p.add_argument("name")
    p.set_defaults(func=run(cmd_users))
    p = users.add_parser("remove", help="remove a user")
    p.add_argument("name")
    p.set_defaults(func=run(cmd_users))
    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_cmd", required=True
    )
    tokens.add_parser("list", help="list tokens").set_defaults(func=run(cmd_tokens))
    p = tokens.add_parser("add", help="make a token; its text is printed once")
    p.add_argument("name")
    p.add_argument("--role", choices=WEB_ROLES, default="viewer")
    p.add_argument("--days", type=int, default=0, help="expire after this many days (0: never)")
    p.set_defaults(func=run(cmd_tokens))
    p = tokens.add_parser("revoke", help="revoke a token")
    p.add_argument("id", type=int)
    p.set_defaults(func=run(cmd_tokens))
