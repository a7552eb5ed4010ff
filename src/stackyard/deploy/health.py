"""Health of tasks: every stage's HTTP probes, run by one scheduler and judged into TaskHealth.

The stage loops (deploy/loops.py) tell the ``ProbeScheduler`` which tasks to probe
(``track``; ``watch`` for a task just started). One thread keeps a heap of due probes and
hands them to a small pool; each task is probed at its own interval, and a stage is woken
only when the judgement of one of its tasks changes. A stage whose check is the image's
HEALTHCHECK (``type: docker``) is judged from the engine's report instead (``from_engine``).
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stackyard.deploy.plan import TaskHealth
from stackyard.engines.base import Address, Health

log = logging.getLogger(__name__)

STARTING_PROBE_INTERVAL = 0.1  # a starting task is probed often, so it serves sooner
# ... and in its first second more often still: a small app listens within milliseconds,
# and every probe interval here is added to the time a push takes to go live.
FAST_PROBE_INTERVAL = 0.02
FAST_WINDOW = 1.0

Key = TypeVar("Key", bound=Hashable)  # a stage (deploy/controller.py StageKey)
Probe = Callable[[Address, str, float], tuple[bool, str]]


@dataclass(frozen=True)
class HealthSettings:
    """The stage's health check (stackyard.yml ``health``), in seconds."""

    type: str = "http"
    path: str = "/"
    interval: float = 2.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 10.0

    @property
    def probed(self) -> bool:
        """True when the platform probes the tasks (HTTP); False for the image's HEALTHCHECK."""
        return self.type == "http"


@dataclass(frozen=True)
class Judgement:
    """A task's health as last judged, with the output of the check that decided it."""

    health: TaskHealth
    output: str = ""


@dataclass
class ProbeRecord:
    """What the scheduler remembers of one probed task."""

    address: Address
    settings: HealthSettings
    first_seen: float
    status: TaskHealth = TaskHealth.STARTING
    failures: int = 0
    next_probe: float = 0.0
    output: str = ""
    in_flight: bool = False

    def judge(self, passed: bool, output: str, now: float) -> None:
        """Take one probe's result: start period, retries, and when to probe next."""
        self.output = output
        in_start_period = now - self.first_seen < self.settings.start_period
        if passed:
            self.status, self.failures = TaskHealth.HEALTHY, 0
        elif not (in_start_period and self.status is TaskHealth.STARTING):
            self.failures += 1
            if self.failures >= self.settings.retries:
                self.status = TaskHealth.UNHEALTHY
        self.next_probe = now + self.interval(now)

    def interval(self, now: float) -> float:
        if self.status is not TaskHealth.STARTING:
            return self.settings.interval
        young = now - self.first_seen < FAST_WINDOW
        return min(
            FAST_PROBE_INTERVAL if young else STARTING_PROBE_INTERVAL, self.settings.interval
        )


def http_probe(address: Address, path: str, timeout: float) -> tuple[bool, str]:
    """One ``GET path`` of the task: passed (2xx or 3xx), and a line saying what it got.

    The standard library's client: a probe runs every few seconds for every task, and
    httpx's request costs about three times the CPU of this one.
    """
    url = f"http://{address}{path}"
    connection = http.client.HTTPConnection(address.host, address.port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return False, f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        connection.close()
    return 200 <= status < 400, f"GET {url}: HTTP {status}"


def from_engine(health: Health) -> TaskHealth:
    """The image HEALTHCHECK's status, as the engine reports it, as a TaskHealth."""
    return {
        Health.NONE: TaskHealth.HEALTHY,  # no HEALTHCHECK: running is as good as it gets
        Health.STARTING: TaskHealth.STARTING,
        Health.HEALTHY: TaskHealth.HEALTHY,
        Health.UNHEALTHY: TaskHealth.UNHEALTHY,
    }[health]


@dataclass
class _Tracked(Generic[Key]):
    key: Key
    record: ProbeRecord


@dataclass(order=True)
class _Due:
    at: float
    order: int
    task_id: str = field(compare=False)


class ProbeScheduler(Generic[Key]):
    """Probes every tracked task when it is due, from one thread and a small pool.

    ``on_change(key)`` is called (on a pool thread) when a judgement of one of that
    stage's tasks changes. ``due`` and ``record`` are the scheduling steps, which tests
    drive without the thread.
    """

    def __init__(
        self,
        on_change: Callable[[Key], None],
        *,
        probe: Probe = http_probe,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 8,
    ) -> None:
        self._on_change = on_change
        self._probe = probe
        self._clock = clock
        self._workers = workers
        self._tracked: dict[str, _Tracked[Key]] = {}
        self._heap: list[_Due] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- what the stage loops say

    def track(
        self, key: Key, tasks: Mapping[str, Address], settings: HealthSettings, now: float
    ) -> None:
        """The stage's running tasks as just observed: probe the new ones from now on,
        forget the ones that are gone. A task keeps its judgement when the settings change
        (a deployment with another check); the new settings apply from its next probe."""
        with self._condition:
            for task_id in [i for i, t in self._tracked.items() if t.key == key]:
                if task_id not in tasks or not settings.probed:
                    del self._tracked[task_id]
            if not settings.probed:
                return
            for task_id, address in tasks.items():
                self._track(key, task_id, address, settings, now)
            self._condition.notify()

    def watch(self, key: Key, task_id: str, address: Address, settings: HealthSettings) -> None:
        """A task was just started: probe it at once, and often (see FAST_WINDOW)."""
        if not settings.probed:
            return
        with self._condition:
            self._track(key, task_id, address, settings, self._clock())
            self._condition.notify()

    def _track(
        self, key: Key, task_id: str, address: Address, settings: HealthSettings, now: float
    ) -> None:
        tracked = self._tracked.get(task_id)
        if tracked is None or tracked.record.address != address:
            record = ProbeRecord(address, settings, first_seen=now, next_probe=now)
            self._tracked[task_id] = _Tracked(key, record)
            self._push(task_id, now)
        elif tracked.record.settings != settings:
            record = tracked.record
            record.settings = settings
            record.next_probe = min(record.next_probe, now + record.interval(now))
            self._push(task_id, record.next_probe)

    def forget(self, key: Key) -> None:
        """The stage's loop stopped: probe none of its tasks any more."""
        with self._condition:
            for task_id in [i for i, t in self._tracked.items() if t.key == key]:
                del self._tracked[task_id]

    def judgements(self, key: Key) -> dict[str, Judgement]:
        """The stage's probed tasks, as last judged (STARTING until a probe decides)."""
        with self._condition:
            return {
                task_id: Judgement(t.record.status, t.record.output)
                for task_id, t in self._tracked.items()
                if t.key == key
            }

    # -- scheduling steps

    def due(self, now: float) -> list[tuple[str, Address, HealthSettings]]:
        """The probes due at ``now``, marked in flight: (task id, address, settings)."""
        found = []
        with self._condition:
            while self._heap and self._heap[0].at <= now:
                entry = heapq.heappop(self._heap)
                tracked = self._tracked.get(entry.task_id)
                if tracked is None or tracked.record.in_flight:
                    continue  # forgotten, or already being probed (it is pushed again after)
                if tracked.record.next_probe != entry.at:
                    continue  # rescheduled since this entry was pushed
                tracked.record.in_flight = True
                found.append((entry.task_id, tracked.record.address, tracked.record.settings))
        return found

    def record(self, task_id: str, passed: bool, output: str, now: float) -> Key | None:
        """Judge one probe's result; the task's stage when its judgement changed."""
        with self._condition:
            tracked = self._tracked.get(task_id)
            if tracked is None:
                return None
            record = tracked.record
            before = record.status
            record.in_flight = False
            record.judge(passed, output, now)
            self._push(task_id, record.next_probe)
            self._condition.notify()
            return tracked.key if record.status is not before else None

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the next probe is due; None when nothing is tracked."""
        with self._condition:
            return max(0.0, self._heap[0].at - now) if self._heap else None

    def _push(self, task_id: str, at: float) -> None:
        heapq.heappush(self._heap, _Due(at, next(self._order), task_id))

    # -- the thread

    def start(self) -> None:
        with self._condition:
            if self._thread is not None:
                return
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="health-probe")
            self._thread = threading.Thread(
                target=self._run, args=(self._pool,), name="health", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
            thread, pool = self._thread, self._pool
        if thread is not None:
            thread.join(timeout=10)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, pool: ThreadPoolExecutor) -> None:
        while True:
            with self._condition:
                if self._stopping:
                    return
                wait = self.next_due_in(self._clock())
                if wait is None or wait > 0:
                    self._condition.wait(wait)
                    continue
            for task_id, address, settings in self.due(self._clock()):
                pool.submit(self._run_probe, task_id, address, settings)

    def _run_probe(self, task_id: str, address: Address, settings: HealthSettings) -> None:
        try:
            passed, output = self._probe(address, settings.path, settings.timeout)
        except Exception as exc:  # a bug in a probe must not stop this task's probing
            log.exception("health probe of task %s at %s failed", task_id, address)
            passed, output = False, f"GET http://{address}{settings.path}: {exc!r}"
        changed = self.record(task_id, passed, output, self._clock())
        if changed is not None:
            self._on_change(changed)
