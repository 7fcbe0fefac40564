"""Store: one engine and session factory per process; SQLite in WAL mode, or PostgreSQL.

The schema is created and upgraded by Alembic (``store/migrations``) at start-up.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "Sessions", "index_answers", "utcnow", "write_lock"]

#: The session factory of a :class:`Database`, as the store's functions take it.
Sessions = sessionmaker[Session]

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (stored as such in every table)."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes; treat them as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _sqlite_pragmas(lock_timeout_s: float) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # commits survive power loss, as fsynced files do
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return on_connect


def write_lock(session: Session) -> None:
    """On SQLite, take the database's write lock now, as the transaction's first statement.

    SQLite begins a transaction at its first write; two transactions that read, decide
    and then write would both decide on what they read, and the second would fail at its
    write. ``BEGIN IMMEDIATE`` makes the second wait (the busy timeout) before it reads.
    PostgreSQL locks rows instead (``FOR UPDATE``) and reports a race as a unique
    violation; there this does nothing.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))


class Database:
    """The index database: engine, session factory and migrations.

    Parameters
    ----------
    url:
        SQLAlchemy URL, e.g. ``sqlite:///var/node.db`` or
        ``postgresql+psycopg://user@127.0.0.1:5432/node``.
    lock_timeout_s:
        The longest a statement waits for a lock (SQLite ``busy_timeout``, PostgreSQL
        ``lock_timeout``); then it fails, and the receiver answers 0xA700 after its
        retries instead of hanging.
    """

    def __init__(self, url: str, lock_timeout_s: float = 30.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": lock_timeout_s}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 10
            if url.startswith("postgresql"):
                timeout_ms = max(1, int(lock_timeout_s * 1000))
                kwargs["connect_args"] = {"options": f"-c lock_timeout={timeout_ms}"}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas(lock_timeout_s))
        self.session: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest Alembic revision."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection_engine"] = self.engine
        command.upgrade(cfg, "head")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def index_answers(sessions: Sessions) -> bool:
    """Whether the index answers a trivial query (the readiness check)."""
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True
