"""Alembic environment: migrations run on the node's own engine (see store/db.py)."""

from __future__ import annotations

from alembic import context

from dicom_ai_node.store.tables import Base

engine = context.config.attributes["connection_engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    context.run_migrations()
