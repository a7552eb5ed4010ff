"""What the API calls for notifications: a stack's channels, a test, the delivery record.

``NotifyService`` owns the delivery worker (started and stopped with the platform's
services). ``test`` goes the way every event goes, through the outbox and the worker,
and waits a little for each channel's first try, so it shows what a real event would do.
"""

from __future__ import annotations

import time
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.notify.channels import ChannelRecords, ChannelView, NewChannel, stack_row_id
from stackyard.notify.delivery import DeliveryWorker
from stackyard.notify.events import trial_notice
from stackyard.notify.outbox import PENDING, TOPIC, Outbox
from stackyard.secrets.masking import SecretMasker
from stackyard.store.models import (
    NotificationAttempt,
    NotificationChannel,
    NotificationDelivery,
    NotificationEvent,
)

TEST_WAIT = 20.0
"""Seconds ``test`` waits for every channel's first try (a try times out after 10 s)."""


class DeliveryView(BaseModel):
    """One event to one channel, as the API shows it (secrets masked)."""

    event: int
    kind: str
    stage: str
    title: str
    channel: int
    status: str  # PENDING, DELIVERED, FAILED
    attempts: int
    last_error: str
    last_attempt: datetime | None
    next_attempt_at: datetime | None  # while PENDING
    delivered_at: datetime | None
    created_at: datetime


class TestOutcome(BaseModel):
    channel: int
    kind: str
    shown: str
    status: str  # DELIVERED, FAILED, or PENDING (no answer yet, or a retry is due)
    detail: str


class TestReport(BaseModel):
    stack: str
    event: int | None
    channels: list[TestOutcome]


class NotifyService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        outbox: Outbox,
        channels: ChannelRecords,
        worker: DeliveryWorker,
    ) -> None:
        self._sessions = sessions
        self.outbox = outbox
        self.channels = channels
        self.worker = worker

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    # -- channels

    def add(self, stack: str, new: NewChannel) -> ChannelView:
        return self.channels.add(stack, new)

    def list_channels(self, stack: str) -> list[ChannelView]:
        return self.channels.list_channels(stack)

    def remove(self, stack: str, number: int) -> ChannelView:
        return self.channels.remove(stack, number)

    # -- what was sent

    def test(self, stack: str, wait: float = TEST_WAIT) -> TestReport:
        """Send a test event to every channel of the stack; each one's first outcome."""
        channels = {c.number: c for c in self.channels.list_channels(stack)}
        with self._sessions.begin() as session:
            event_id = self.outbox.emit(session, trial_notice(stack))
        if event_id is None:
            return TestReport(stack=stack, event=None, channels=[])
        deadline = time.monotonic() + wait
        while True:
            seen = changes.generation(TOPIC)
            rows = self._test_rows(event_id)
            tried = all(attempts > 0 for _, _, attempts, _ in rows)
            left = deadline - time.monotonic()
            if tried or left <= 0:
                break
            changes.wait(TOPIC, seen, min(left, 1.0))
        outcomes = []
        for number, status, attempts, detail in rows:
            channel = channels[number]
            if attempts == 0:
                detail = f"not tried within {wait:g} s; it stays queued"
            outcomes.append(
                TestOutcome(
                    channel=number,
                    kind=channel.kind,
                    shown=channel.shown,
                    status=status,
                    detail=detail,
                )
            )
        return TestReport(stack=stack, event=event_id, channels=outcomes)

    def _test_rows(self, event_id: int) -> list[tuple[int, str, int, str]]:
        with self._sessions() as session:
            rows = session.execute(
                select(
                    NotificationChannel.number,
                    NotificationDelivery.status,
                    NotificationDelivery.attempts,
                    NotificationDelivery.id,
                )
                .join(
                    NotificationChannel, NotificationChannel.id == NotificationDelivery.channel_id
                )
                .where(NotificationDelivery.event_id == event_id)
                .order_by(NotificationChannel.number)
            ).all()
            out = []
            for number, status, attempts, delivery_id in rows:
                detail = session.scalar(
                    select(NotificationAttempt.detail)
                    .where(NotificationAttempt.delivery_id == delivery_id)
                    .order_by(NotificationAttempt.id.desc())
                    .limit(1)
                )
                out.append((number, status, attempts, detail or ""))
            return out

    def deliveries(self, stack: str, limit: int = 50) -> list[DeliveryView]:
        """The newest deliveries of the stack's events, newest first."""
        with self._sessions() as session:
            stack_id = stack_row_id(session, stack)
            rows = session.execute(
                select(NotificationDelivery, NotificationEvent, NotificationChannel.number)
                .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
                .join(
                    NotificationChannel, NotificationChannel.id == NotificationDelivery.channel_id
                )
                .where(NotificationEvent.stack_id == stack_id)
                .order_by(NotificationDelivery.id.desc())
                .limit(limit)
            ).all()
            views = []
            for delivery, event, number in rows:
                last = session.scalar(
                    select(NotificationAttempt.at)
                    .where(NotificationAttempt.delivery_id == delivery.id)
                    .order_by(NotificationAttempt.id.desc())
                    .limit(1)
                )
                views.append(
                    DeliveryView(
                        event=event.id,
                        kind=event.kind,
                        stage=event.stage,
                        title=str(event.notice.get("title", "")),
                        channel=number,
                        status=delivery.status,
                        attempts=delivery.attempts,
                        last_error=delivery.last_error,
                        last_attempt=last,
                        next_attempt_at=(
                            delivery.next_attempt_at if delivery.status == PENDING else None
                        ),
                        delivered_at=delivery.delivered_at,
                        created_at=event.created_at,
                    )
                )
        masker = SecretMasker(self.worker.mask_values(stack))
        return [v.model_copy(update={"title": masker.mask(v.title)}) for v in views]
