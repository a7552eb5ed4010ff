"""A real state database (SQLite, migrated) holding one stack and its stages' routes, for
tests and benches that drive the control plane's watchers (certificates, traffic) without
a platform."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Stack, StageRoute


@dataclass(frozen=True)
class StateDb:
    database: Engine  # dispose() it when done
    sessions: sessionmaker[Session]
    stack_id: int


def state_with_routes(path: Path, stack: str, routes: Iterable[StageRoute]) -> StateDb:
    """A migrated state database at ``path`` with stack ``stack`` (repository
    ``https://example.invalid/<stack>.git``) and ``routes`` (their ``stack_id`` set here)."""
    database = open_database(f"sqlite:///{path}")
    migrate(database)
    sessions = session_factory(database)
    with sessions.begin() as session:
        row = Stack(name=stack, repo=f"https://example.invalid/{stack}.git")
        session.add(row)
        session.flush()
        stack_id = row.id
        for route in routes:
            route.stack_id = stack_id
            session.add(route)
    return StateDb(database, sessions, stack_id)
