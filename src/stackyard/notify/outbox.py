"""The outbox: an event and its deliveries, written with the change that caused them.

An emitter (the deployment executor, a pipeline run at a gate, a build's end) calls
``Outbox.emit`` inside the transaction that records the change, so the event is stored if
and only if the change is. Nothing is sent here: the delivery worker (delivery.py) sends
later, on its own threads, so a receiver that is slow or down never holds up a deployment
or a run. A stack without a channel for the event's kind gets nothing written at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.notify.events import EventKind, Notice
from stackyard.store.models import (
    NotificationChannel,
    NotificationDelivery,
    NotificationEvent,
    Stack,
)

TOPIC = "stackyard-notifications"
"""The change signal (stackyard.changes) that wakes the delivery worker."""

HEAL_QUIET = 300.0
"""Seconds after a ``healed`` event of a stage during which its next ones are not sent: a
task that keeps crashing would otherwise post every few seconds. The events table (``heal``
events) and the deployment log keep every replacement."""

PENDING = "PENDING"
DELIVERED = "DELIVERED"
FAILED = "FAILED"


def wake_worker() -> None:
    changes.notify(TOPIC)


class Outbox:
    def __init__(
        self,
        *,
        heal_quiet: float = HEAL_QUIET,
        wake: Callable[[], None] = wake_worker,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._heal_quiet = heal_quiet
        self._wake = wake
        self._clock = clock

    def emit(self, session: Session, notice: Notice) -> int | None:
        """Add ``notice`` and one PENDING delivery per channel of its stack that listens
        to its kind, in ``session``'s transaction; the worker wakes once it commits. The
        event's id, or None when no channel listens (nothing is written then)."""
        stack_id = session.scalar(select(Stack.id).where(Stack.name == notice.stack))
        if stack_id is None:
            return None
        channels = session.execute(
            select(NotificationChannel.id, NotificationChannel.events).where(
                NotificationChannel.stack_id == stack_id
            )
        ).all()
        listening = [
            channel_id
            for channel_id, kinds in channels
            if notice.kind is EventKind.TEST or str(notice.kind) in kinds
        ]
        if not listening or self._quiet(session, stack_id, notice):
            return None
        now = self._clock()
        row = NotificationEvent(
            stack_id=stack_id,
            kind=str(notice.kind),
            stage=notice.stage,
            notice=notice.to_json(),
            created_at=now,
        )
        session.add(row)
        session.flush()
        for channel_id in listening:
            session.add(
                NotificationDelivery(
                    event_id=row.id,
                    channel_id=channel_id,
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                )
            )
        event.listen(session, "after_commit", lambda _session: self._wake(), once=True)
        return row.id

    def emit_now(self, sessions: sessionmaker[Session], notice: Notice) -> int | None:
        """``emit`` in a transaction of its own: for an event recorded right after the
        change it follows (a rollback's outcome)."""
        with sessions.begin() as session:
            return self.emit(session, notice)

    def _quiet(self, session: Session, stack_id: int, notice: Notice) -> bool:
        """Whether a ``healed`` event of the same stage was sent in the quiet time."""
        if notice.kind is not EventKind.HEALED or self._heal_quiet <= 0:
            return False
        since = self._clock() - timedelta(seconds=self._heal_quiet)
        recent = session.scalar(
            select(NotificationEvent.id)
            .where(
                NotificationEvent.stack_id == stack_id,
                NotificationEvent.kind == str(EventKind.HEALED),
                NotificationEvent.stage == notice.stage,
                NotificationEvent.created_at >= since,
            )
            .limit(1)
        )
        return recent is not None
