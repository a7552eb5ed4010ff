"""Alembic environment: runs migrations on the connection the platform hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from stackyard.store.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # the `alembic` command line, for developers writing migrations
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///stackyard.db"
    with create_engine(url).begin() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
