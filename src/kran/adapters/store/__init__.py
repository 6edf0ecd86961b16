"""SQL store (SQLite by default) with Alembic migrations."""
