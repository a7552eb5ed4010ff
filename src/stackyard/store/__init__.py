"""State: SQLAlchemy models and Alembic migrations (SQLite by default, PostgreSQL too)."""
