"""Store: the schema migrations (Alembic), run by ``Database.migrate``."""
