"""Record numbers: the next build, pipeline run, release or deployment number.

Builds and runs count per stack, releases and deployments per stage. Every record type
takes its number here, inside the transaction that inserts the record: one counter row
per (records, stack, stage) is incremented with an UPDATE, which locks that row (SQLite:
the whole database) until the transaction ends, so two writers that race get distinct
numbers, on SQLite and on PostgreSQL alike. The unique constraints on the records stay,
as the last guard.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stackyard.errors import ComponentError
from stackyard.store.models import Build, Deployment, PipelineRun, RecordCounter, Release

Numbered = type[Build] | type[PipelineRun] | type[Release] | type[Deployment]


def next_number(session: Session, records: Numbered, stack_id: int, stage: str = "") -> int:
    """The number of the next ``records`` row of the stack (and stage), taken in the
    session's transaction. No other writer gets it; if the transaction rolls back, the
    counter does too and the next writer gets the same number."""
    stage = stage if records in (Release, Deployment) else ""
    counter = _counter(records, stack_id, stage)
    for _attempt in range(2):
        moved = session.execute(
            update(RecordCounter)
            .where(*counter)
            .values(last_number=RecordCounter.last_number + 1)
            .execution_options(synchronize_session=False)
        )
        if getattr(moved, "rowcount", 0):
            number = session.scalar(select(RecordCounter.last_number).where(*counter))
            if number is not None:
                return number
            continue  # the UPDATE just found it: only a broken database gets here
        first = _highest(session, records, stack_id, stage) + 1
        try:
            with session.begin_nested():  # a savepoint: a lost race undoes only this insert
                session.add(
                    RecordCounter(
                        kind=records.__tablename__,
                        stack_id=stack_id,
                        stage=stage,
                        last_number=first,
                    )
                )
        except IntegrityError:
            continue  # another writer made the counter first (PostgreSQL): count from it
        return first
    raise ComponentError(
        f"database: no new {records.__tablename__} number for stack {stack_id} {stage}".rstrip(),
        hint="its record_counters table does not take updates; check the database",
    )


def _counter(records: Numbered, stack_id: int, stage: str) -> tuple[ColumnElement[bool], ...]:
    return (
        RecordCounter.kind == records.__tablename__,
        RecordCounter.stack_id == stack_id,
        RecordCounter.stage == stage,
    )


def _highest(session: Session, records: Numbered, stack_id: int, stage: str) -> int:
    """The highest number already used: the counter's start, for records numbered before
    counters existed (the migration also starts them there)."""
    query = select(func.max(records.number)).where(records.stack_id == stack_id)
    if records is Release:
        query = query.where(Release.stage == stage)
    elif records is Deployment:
        query = query.where(Deployment.stage == stage)
    return session.scalar(query) or 0
