"""The traffic store: the router's access logs folded into per-stage minute buckets in the
state database, kept for the retention (7 days by default), read by `stackyard traffic`,
the API and the console.

``TrafficCounter.count`` asks the router for the requests logged since the positions it
stored (``Router.access_since``), folds them (deploy/traffic.py) into the buckets of the
stage each belongs to (``Router.access_keys``: the entry's logger and host), and writes the
counts and the new positions in one transaction: a restart neither loses nor repeats a
line. It runs every few seconds on its own thread and before each read; ``prune`` removes
buckets past the retention, hourly.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy.domains import route_of
from stackyard.deploy.ticker import Ticker
from stackyard.deploy.traffic import BucketKey, Counts, Serving, TrafficMinute, fold, traffic_minute
from stackyard.errors import UsageError
from stackyard.router.base import AccessBatch, LogPosition, Router
from stackyard.store.models import (
    AccessLogPosition,
    Deployment,
    Stack,
    StageRoute,
    TrafficBucket,
)

log = logging.getLogger(__name__)

COUNT_EVERY = 10.0  # seconds between two reads of the access logs
PRUNE_EVERY = 3600.0  # seconds between two removals of buckets past the retention
RETENTION_DAYS = 7
MAX_BATCHES = 256  # reads one count makes at most (each up to the router's read limit)

StageOwner = tuple[int, str]  # (stack id, stage)


def serving_of(session: Session, stack_id: int, stage: str) -> builtins.list[Serving]:
    """The stage's COMPLETED deployments, as what served from each one's end on."""
    rows = session.execute(
        select(Deployment.finished_at, Deployment.release_number, Deployment.digest)
        .where(
            Deployment.stack_id == stack_id,
            Deployment.stage == stage,
            Deployment.status == "COMPLETED",
            Deployment.finished_at.is_not(None),
        )
        .order_by(Deployment.finished_at)
    ).all()
    return [Serving(at.timestamp(), release, digest) for at, release, digest in rows if at]


class TrafficCounter:
    """Counts the router's access logs into the state database, on one thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        router: Router,
        *,
        retention_days: int = RETENTION_DAYS,
        interval: float = COUNT_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retention_days < 7:
            raise UsageError(
                f"traffic retention: {retention_days} days is too short",
                hint="keep traffic figures 7 days or more (--traffic-retention-days)",
            )
        self._sessions = sessions
        self._router = router
        self.retention_days = retention_days
        self._interval = interval
        self._clock = clock
        self._counting = threading.Lock()  # the thread and a reader never read one line twice
        # Counting can wait: under full load the router's Caddies come first, and the lines
        # wait in the logs (each Caddy keeps 5 x 10 MB per log) until the cores are free.
        self._ticker = Ticker("traffic-counter", "counting traffic", interval, self._tick, nice=19)
        self._pruned = 0.0

    def start(self) -> None:
        if self._router.supports_access_logs and self._interval > 0:
            self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def _tick(self) -> None:
        self.count()
        if self._clock() - self._pruned >= PRUNE_EVERY:
            self.prune()
            self._pruned = self._clock()

    # -- counting

    def count(self) -> int:
        """Fold every request logged since the last count; the number of requests read
        (those of no stage included). Nothing without a router that keeps access logs."""
        if not self._router.supports_access_logs:
            return 0
        read = 0
        for _ in range(MAX_BATCHES):  # one lock per batch: a reader waits for one at most
            with self._counting, self._sessions.begin() as session:
                batch = self._router.access_since(_positions(session))
                self._store(session, batch)
            read += len(batch.records)
            if not batch.more:
                break
        return read

    def _store(self, session: Session, batch: AccessBatch) -> None:
        if batch.records:
            owners = self._owners(session)
            serving = {owner: serving_of(session, *owner) for owner in set(owners.values())}
            _add(session, fold(batch.records, owners, serving))
        session.execute(delete(AccessLogPosition))
        session.add_all(
            AccessLogPosition(
                path=p.path, device=p.device, inode=p.inode, head=p.head, offset=p.offset
            )
            for p in batch.positions
        )

    def _owners(self, session: Session) -> dict[tuple[str, str | None], StageOwner]:
        """Whose requests each (logger, host) of the access logs are: every routed stage."""
        owners: dict[tuple[str, str | None], StageOwner] = {}
        for stack_name, row in session.execute(
            select(Stack.name, StageRoute).join(Stack, Stack.id == StageRoute.stack_id)
        ).all():
            if not (row.host or row.port):
                continue
            for key in self._router.access_keys(route_of(stack_name, row)):
                owners[key] = (row.stack_id, row.stage)
        return owners

    # -- reading and pruning

    def minutes(self, stack_id: int, stage: str, since: float) -> builtins.list[TrafficMinute]:
        """The stage's buckets from the minute of ``since`` on, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(TrafficBucket)
                .where(
                    TrafficBucket.stack_id == stack_id,
                    TrafficBucket.stage == stage,
                    TrafficBucket.minute >= int(since // 60),
                )
                .order_by(TrafficBucket.minute, TrafficBucket.release)
            ).all()
            return [traffic_minute(row.minute, row.release, _counts(row)) for row in rows]

    def prune(self) -> int:
        """Remove the buckets older than the retention; how many."""
        oldest = int(self._clock() // 60) - self.retention_days * 24 * 60
        with self._sessions.begin() as session:
            gone = session.execute(delete(TrafficBucket).where(TrafficBucket.minute < oldest))
        removed = int(gone.rowcount or 0)  # type: ignore[attr-defined]
        if removed:
            log.info("removed %d traffic minute(s) older than %d days", removed,
                     self.retention_days)  # fmt: skip
        return removed


def _positions(session: Session) -> Sequence[LogPosition]:
    return [
        LogPosition(row.path, row.device, row.inode, row.head, row.offset)
        for row in session.scalars(select(AccessLogPosition))
    ]


def _counts(row: TrafficBucket) -> Counts:
    return Counts(
        digest=row.digest,
        requests=row.requests,
        status_2xx=row.status_2xx,
        status_3xx=row.status_3xx,
        status_4xx=row.status_4xx,
        status_5xx=row.status_5xx,
        latency={int(index): count for index, count in (row.latency or {}).items()},
    )


def _add(session: Session, buckets: dict[BucketKey[StageOwner], Counts]) -> None:
    """Add the counts to the stored buckets (created when missing)."""
    for key, counts in buckets.items():
        stack_id, stage = key.owner
        row = session.scalar(
            select(TrafficBucket).where(
                TrafficBucket.stack_id == stack_id,
                TrafficBucket.stage == stage,
                TrafficBucket.minute == key.minute,
                TrafficBucket.release == key.release,
            )
        )
        if row is None:
            row = TrafficBucket(stack_id=stack_id, stage=stage, minute=key.minute,
                                release=key.release)  # fmt: skip
            session.add(row)
            total = Counts()
        else:
            total = _counts(row)
        total.merge(counts)
        row.digest = total.digest
        row.requests = total.requests
        row.status_2xx = total.status_2xx
        row.status_3xx = total.status_3xx
        row.status_4xx = total.status_4xx
        row.status_5xx = total.status_5xx
        row.latency = {str(index): n for index, n in sorted(total.latency.items())}
