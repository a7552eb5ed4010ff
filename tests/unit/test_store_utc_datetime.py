"""Datetime columns round-trip through SQLite as aware UTC values (SQLite keeps no offset)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import DateTime, Engine, select, text
from sqlalchemy.exc import StatementError

from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Base, Build, Event, Stack


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_round_trip_returns_aware_utc(engine: Engine) -> None:
    sessions = session_factory(engine)
    paris = timezone(timedelta(hours=2))
    at = datetime(2026, 11, 22, 10, 36, 26, 371017, tzinfo=paris)
    with sessions.begin() as session:
        stack = Stack(name="web", repo="/repo")
        session.add(stack)
        session.flush()
        session.add(Build(stack_id=stack.id, number=1, started_at=at))
        session.add(Event(kind="start", at=at))
    with sessions() as session:
        build = session.scalars(select(Build)).one()
        event = session.scalars(select(Event)).one()
        created = session.scalars(select(Stack)).one().created_at
    for value in (build.started_at, build.created_at, event.at, created):
        assert value is not None
        assert value.tzinfo is UTC
    assert build.started_at == at
    assert build.started_at.isoformat() == "2026-11-22T08:36:26.371017+00:00"
    assert build.finished_at is None


def test_rows_written_before_the_fix_read_as_utc(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO events (at, kind, subject, message) VALUES (:at, 'start', '', '')"),
            {"at": "2026-11-22 08:36:26.371017"},
        )
    with session_factory(engine)() as session:
        at = session.scalars(select(Event.at)).one()
    assert at == datetime(2026, 11, 22, 8, 36, 26, 371017, tzinfo=UTC)


def test_naive_datetime_is_refused(engine: Engine) -> None:
    with (
        pytest.raises(StatementError, match="naive datetime"),
        session_factory(engine).begin() as s,
    ):
        s.add(Event(kind="start", at=datetime(2026, 11, 22, 8, 36)))


def test_every_datetime_column_is_utc() -> None:
    plain = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime)
    ]
    assert plain == [], "use UTCDateTime: SQLite would give these back naive"
