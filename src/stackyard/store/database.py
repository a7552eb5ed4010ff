"""Open the database and bring its schema up to date with Alembic, at every start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from stackyard.errors import ComponentError

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets readers (CLI, console) run while the control plane writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def open_database(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(engine: Engine) -> None:
    """Apply every pending migration; raise ComponentError naming the database on failure."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (SQLAlchemyError, CommandError) as exc:
        raise ComponentError(
            f"database {engine.url.render_as_string()}: migration failed: {exc}",
            hint="check that the data directory is writable and not used by a newer Stackyard",
        ) from exc
    except Exception as exc:  # a migration is code: whatever it raises, name it
        raise ComponentError(
            f"database {engine.url.render_as_string()}: migration failed: "
            f"{type(exc).__name__}: {exc}",
            hint="this version's migrations do not apply to this database; report it",
        ) from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def known_revisions() -> list[str]:
    """Every schema revision this Stackyard's migrations know, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at; None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise ComponentError(
            f"database {engine.url.render_as_string()}: cannot read its schema revision: {exc}"
        ) from exc
