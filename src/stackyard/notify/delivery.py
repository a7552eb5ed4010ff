"""The delivery worker: sends what the outbox holds, retries with back-off, records every try.

One thread picks due deliveries (PENDING, their time come) and hands each to a small pool
of sender threads, so one receiver that hangs until its timeout holds up neither the
others nor anything else: emitters only write rows. Each try is recorded (its outcome,
secrets masked, and how long it took) with the delivery's next state, decided by
``retry.after_attempt``, in one transaction. Everything lives in the store: after a
restart the worker finds what is still PENDING and goes on (a try cut short by the
restart is made again: delivery is at least once, and each message names its delivery).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.channels.base import Message
from stackyard.errors import StackyardError
from stackyard.notify.channels import Addressed, ChannelKinds, ChannelRecords
from stackyard.notify.events import Notice
from stackyard.notify.outbox import DELIVERED, FAILED, PENDING, TOPIC
from stackyard.notify.retry import Delivered, GiveUp, Outcome, RetryIn, RetryPolicy, after_attempt
from stackyard.secrets.masking import SecretMasker
from stackyard.store.models import (
    NotificationAttempt,
    NotificationDelivery,
    NotificationEvent,
    Stack,
)

log = logging.getLogger(__name__)

IDLE = 60.0
"""Seconds the worker sleeps with nothing due; a new event wakes it at once."""
KEEP = timedelta(days=30)
"""How long delivered and failed events are kept (with their attempts)."""


@dataclass(frozen=True)
class WorkerSettings:
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    senders: int = 4  # tries under way at once
    idle: float = IDLE
    keep: timedelta = KEEP
    console_url: str = ""  # the platform's URL, before a notice's console path


@dataclass(frozen=True)
class _Job:
    delivery: int
    attempts: int
    channel: Addressed
    message: Message
    masker: SecretMasker


class DeliveryWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        channels: ChannelRecords,
        kinds: ChannelKinds,
        *,
        mask_values: Callable[[str], list[str]],
        settings: WorkerSettings | None = None,
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self._kinds = kinds
        self.mask_values = mask_values
        self.settings = settings or WorkerSettings()
        self._inflight: set[int] = set()
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._pruned_at = 0.0

    # -- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.settings.senders, thread_name_prefix="notify-send")
        self._thread = threading.Thread(target=self._loop, name="notify-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop picking deliveries; tries under way end within their timeout."""
        self._stopping.set()
        changes.notify(TOPIC)
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._kinds.close()

    # -- the picking thread

    def _loop(self) -> None:
        while not self._stopping.is_set():
            seen = changes.generation(TOPIC)
            try:
                wait = self.dispatch()
                self._prune_now_and_then()
            except Exception:  # the store may be busy or gone for a moment: look again
                log.exception("notifications: picking due deliveries failed")
                wait = self.settings.policy.first
            changes.wait(TOPIC, seen, wait)

    def dispatch(self) -> float:
        """Hand every due delivery to a sender; seconds until the next one is due."""
        pool = self._pool
        with self._guard:
            busy = set(self._inflight)
        free = self.settings.senders - len(busy)
        now = datetime.now(UTC)
        with self._sessions() as session:
            due: list[int] = []
            if free > 0:
                due = list(
                    session.scalars(
                        select(NotificationDelivery.id)
                        .where(
                            NotificationDelivery.status == PENDING,
                            NotificationDelivery.next_attempt_at <= now,
                            NotificationDelivery.id.not_in(busy),
                        )
                        .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
                        .limit(free)
                    )
                )
            later = session.scalar(
                select(func.min(NotificationDelivery.next_attempt_at)).where(
                    NotificationDelivery.status == PENDING,
                    NotificationDelivery.next_attempt_at > now,
                )
            )
        for delivery_id in due:
            with self._guard:
                self._inflight.add(delivery_id)
            if pool is None:
                self.attempt(delivery_id)
            else:
                pool.submit(self.attempt, delivery_id)
        if later is None:
            return self.settings.idle
        return min(self.settings.idle, max((later - now).total_seconds(), 0.0))

    # -- one try

    def attempt(self, delivery_id: int) -> None:
        """Try one delivery and record how it went."""
        try:
            job = self._job(delivery_id)
            if job is None:
                return
            started = time.monotonic()
            outcome = self._send(job)
            seconds = time.monotonic() - started
            outcome = Outcome(
                outcome.ok, job.masker.mask(outcome.detail), outcome.retryable, outcome.retry_after
            )
            self._record(job, outcome, seconds)
        except Exception:  # recorded nowhere else: the next dispatch tries again
            log.exception("notifications: delivery %s could not be tried", delivery_id)
        finally:
            with self._guard:
                self._inflight.discard(delivery_id)
            changes.notify(TOPIC)  # a sender is free: the picker may hand out more

    def _job(self, delivery_id: int) -> _Job | None:
        with self._sessions() as session:
            found = session.execute(
                select(NotificationDelivery, NotificationEvent, Stack.name)
                .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
                .join(Stack, Stack.id == NotificationEvent.stack_id)
                .where(NotificationDelivery.id == delivery_id)
            ).first()
            if found is None:
                return None
            delivery, event, stack = found
            if delivery.status != PENDING:
                return None
            channel = self._channels.addressed(session, delivery.channel_id)
            if channel is None:
                return None
            notice = Notice.from_json(event.kind, stack, event.stage, dict(event.notice))
            attempts, at = delivery.attempts, event.created_at
        masker = SecretMasker([*self.mask_values(stack), *channel.secrets])
        return _Job(
            delivery_id,
            attempts,
            channel,
            self._message(notice, masker, at, event.id, delivery_id),
            masker,
        )

    def _message(
        self, notice: Notice, masker: SecretMasker, at: datetime, event_id: int, delivery_id: int
    ) -> Message:
        base = self.settings.console_url.rstrip("/")
        return Message(
            event=str(notice.kind),
            stack=notice.stack,
            stage=notice.stage,
            title=masker.mask(notice.title),
            text=masker.mask(notice.text),
            fields=tuple((name, masker.mask(value)) for name, value in notice.fields),
            link=f"{base}{notice.path}" if base and notice.path else "",
            severity=notice.severity,
            event_id=event_id,
            delivery_id=delivery_id,
            at=at,
        )

    def _send(self, job: _Job) -> Outcome:
        channel = job.channel
        try:
            self._channels.check(channel.kind, channel.destination)
            adapter = self._kinds.get(channel.kind)
            return Outcome(True, adapter.deliver(job.message, channel.destination))
        except StackyardError as exc:
            return Outcome(False, exc.message, exc.retryable, getattr(exc, "retry_after", None))
        except Exception as exc:  # an adapter's bug: recorded, and tried again later
            log.exception("notifications: the %s channel failed", channel.kind)
            return Outcome(False, f"internal error: {exc!r}")

    def _record(self, job: _Job, outcome: Outcome, seconds: float) -> None:
        attempts = job.attempts + 1
        step = after_attempt(self.settings.policy, attempts, outcome)
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            delivery = session.get(NotificationDelivery, job.delivery)
            if delivery is None:
                return  # its channel or stack went away meanwhile
            session.add(
                NotificationAttempt(
                    delivery_id=job.delivery,
                    at=now,
                    ok=outcome.ok,
                    detail=outcome.detail,
                    seconds=round(seconds, 3),
                )
            )
            delivery.attempts = attempts
            match step:
                case Delivered():
                    delivery.status, delivery.delivered_at = DELIVERED, now
                    delivery.last_error = ""
                case RetryIn(seconds=wait):
                    delivery.next_attempt_at = now + timedelta(seconds=wait)
                    delivery.last_error = outcome.detail
                case GiveUp(reason=reason):
                    delivery.status, delivery.last_error = FAILED, reason
        where = f"channel {job.channel.number} ({job.channel.kind}) of {job.channel.stack}"
        match step:
            case RetryIn(seconds=wait):
                log.info(
                    "notification to %s failed, next try in %.0f s: %s", where, wait, outcome.detail
                )
            case GiveUp(reason=reason):
                log.warning("notification to %s not delivered: %s", where, reason)
            case _:
                pass

    # -- keeping the tables small

    def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._pruned_at < 3600:
            return
        self._pruned_at = time.monotonic()
        self.prune(datetime.now(UTC) - self.settings.keep)

    def prune(self, before: datetime) -> int:
        """Delete events older than ``before`` that nothing will send any more."""
        with self._sessions.begin() as session:
            pending = select(NotificationDelivery.event_id).where(
                NotificationDelivery.status == PENDING
            )
            result = session.execute(
                delete(NotificationEvent).where(
                    NotificationEvent.created_at < before, NotificationEvent.id.not_in(pending)
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)
