"""Health checks of tasks: HTTP probes (or the image's HEALTHCHECK) turned into TaskHealth.

The executor asks ``HealthTracker.assess`` once per tick for every running task; probes
run concurrently, each bounded by the check's timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from stackyard.deploy.plan import TaskHealth
from stackyard.engines.base import Health, TaskInfo

STARTING_PROBE_INTERVAL = 0.1  # a starting task is probed often, so it serves sooner
# ... and in its first second more often still: a small app listens within milliseconds,
# and every probe interval here is added to the time a push takes to go live.
FAST_PROBE_INTERVAL = 0.02
FAST_WINDOW = 1.0


@dataclass(frozen=True)
class HealthSettings:
    """The stage's health check (stackyard.yml ``health``), in seconds."""

    type: str = "http"
    path: str = "/"
    interval: float = 2.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 10.0


@dataclass
class _Record:
    first_seen: float
    status: TaskHealth = TaskHealth.STARTING
    failures: int = 0
    next_probe: float = 0.0
    output: str = ""


class HealthTracker:
    """Remembers each task's health between ticks; forgets tasks that are gone."""

    def __init__(self, settings: HealthSettings) -> None:
        self.settings = settings
        self._records: dict[str, _Record] = {}
        self._client = httpx.Client(timeout=settings.timeout)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def watch(self, task_id: str, now: float) -> None:
        """A task was just started: probe it from now on, often (see FAST_WINDOW)."""
        self._records.setdefault(task_id, _Record(first_seen=now, next_probe=now))

    def next_probe_in(self, now: float) -> float | None:
        """Seconds until a starting task's next probe is due (None: no task is starting)."""
        if self.settings.type != "http":
            return None
        due = [r.next_probe for r in self._records.values() if r.status is TaskHealth.STARTING]
        return max(0.0, min(due) - now) if due else None

    def output(self, task_id: str) -> str:
        record = self._records.get(task_id)
        return record.output if record else ""

    def assess(self, tasks: Iterable[TaskInfo], now: float) -> dict[str, TaskHealth]:
        """The health of every task; due HTTP probes run concurrently first."""
        tasks = list(tasks)
        seen = {t.id for t in tasks}
        for gone in set(self._records) - seen:
            del self._records[gone]
        due = []
        for task in tasks:
            record = self._records.setdefault(task.id, _Record(first_seen=now))
            if task.running and self.settings.type == "http" and now >= record.next_probe:
                due.append(task)
        results = dict(zip([t.id for t in due], self._pool.map(self._probe, due), strict=True))
        return {t.id: self._judge(t, self._records[t.id], results.get(t.id), now) for t in tasks}

    def _probe(self, task: TaskInfo) -> tuple[bool, str]:
        url = f"http://127.0.0.1:{task.port}{self.settings.path}"
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            return False, f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")
        ok = 200 <= response.status_code < 400
        return ok, f"GET {url}: HTTP {response.status_code}"

    def _judge(
        self, task: TaskInfo, record: _Record, probe: tuple[bool, str] | None, now: float
    ) -> TaskHealth:
        if not task.running:
            return TaskHealth.EXITED
        if self.settings.type == "docker":
            record.output = task.health_output
            return _from_engine(task.health)
        if probe is None:
            return record.status
        passed, record.output = probe
        in_start_period = now - record.first_seen < self.settings.start_period
        if passed:
            record.status, record.failures = TaskHealth.HEALTHY, 0
        elif not (in_start_period and record.status is TaskHealth.STARTING):
            record.failures += 1
            if record.failures >= self.settings.retries:
                record.status = TaskHealth.UNHEALTHY
        record.next_probe = now + self._interval(record, now)
        return record.status

    def _interval(self, record: _Record, now: float) -> float:
        if record.status is not TaskHealth.STARTING:
            return self.settings.interval
        young = now - record.first_seen < FAST_WINDOW
        return min(
            FAST_PROBE_INTERVAL if young else STARTING_PROBE_INTERVAL, self.settings.interval
        )


def _from_engine(health: Health) -> TaskHealth:
    return {
        Health.NONE: TaskHealth.HEALTHY,  # no HEALTHCHECK: running is as good as it gets
        Health.STARTING: TaskHealth.STARTING,
        Health.HEALTHY: TaskHealth.HEALTHY,
        Health.UNHEALTHY: TaskHealth.UNHEALTHY,
    }[health]
