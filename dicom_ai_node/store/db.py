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
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "utcnow"]

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (stored as such in every table)."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes; treat them as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # commits survive power loss, as fsynced files do
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """The index database: engine, session factory and migrations.

    Parameters
    ----------
    url:
        SQLAlchemy URL, e.g. ``sqlite:///var/node.db`` or
        ``postgresql+psycopg://user@127.0.0.1:5432/node``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 10
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
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
