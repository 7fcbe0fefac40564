"""Store: the Alembic environment; migrations run on the node's own engine (see store/db.py)."""

from __future__ import annotations

from alembic import context

from dicom_ai_node.store.tables import Base

engine = context.config.attributes["connection_engine"]
with engine.begin() as connection:
    if engine.dialect.name == "sqlite":
        # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE, so each
        # CREATE TABLE would commit on its own: a node killed during its first start
        # would leave half a schema that no later start can upgrade ("table already
        # exists"). SQLite's DDL is transactional; IMMEDIATE also makes two processes
        # that start at once migrate one after the other.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    context.run_migrations()
