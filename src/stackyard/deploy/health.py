"""Health of tasks: every stage's HTTP probes, run by one scheduler and judged into TaskHealth.

The stage loops (deploy/loops.py) tell the ``ProbeScheduler`` which tasks to probe
(``track``; ``watch`` for a task just started). One thread keeps a heap of due probes and
hands them to a small pool; each task is probed at its own interval, and a stage is woken
only when the judgement of one of its tasks changes. A stage whose check is the image's
HEALTHCHECK (``type: docker``) is judged from the engine's report instead (``from_engine``).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable, Mapping
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


@dataclass(frozen=True)
class ProbeResult:
    task_id: str
    address: Address  # where it asked: a task that moved meanwhile is judged there afresh
    passed: bool  # 2xx or 3xx
    output: str  # what it asked and got, e.g. "GET http://127.0.0.1:8123/healthz: HTTP 200"


@dataclass
class _Exchange:
    task_id: str
    address: Address
    url: str
    request: bytes
    deadline: float
    timeout: float
    sock: socket.socket
    connected: bool = False
    received: bytes = b""

    def result(self, passed: bool, said: str) -> ProbeResult:
        return ProbeResult(self.task_id, self.address, passed, f"GET {self.url}: {said}")


class Prober:
    """HTTP probes of many tasks at once, all on the caller's thread.

    Each probe connects without blocking, sends ``GET path`` and reads the status line;
    ``poll`` waits for whichever socket is ready (or ``wake`` from another thread), so a
    slow task delays no other and no thread is handed a probe. A probe costs a few tens of
    microseconds of CPU here, against several times that for a client library on a pool.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._waker, self._wake_up = socket.socketpair()
        for end in (self._waker, self._wake_up):
            end.setblocking(False)
        self._selector.register(self._waker, selectors.EVENT_READ, None)
        self._open: dict[int, _Exchange] = {}

    def close(self) -> None:
        for exchange in list(self._open.values()):
            self._end(exchange)
        self._selector.close()
        self._waker.close()
        self._wake_up.close()

    def wake(self) -> None:
        """End the current ``poll`` early (from any thread)."""
        # A full buffer holds wake-ups already: the poll ends anyway.
        with contextlib.suppress(BlockingIOError):
            self._wake_up.send(b"\0")

    def busy(self) -> bool:
        return bool(self._open)

    def begin(self, task_id: str, address: Address, path: str, timeout: float) -> list[ProbeResult]:
        """Start one probe; its result comes from a later ``poll`` (or at once, if the
        connection is refused before it is even under way)."""
        url = f"http://{address}{path}"
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: stackyard-health\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        exchange = _Exchange(task_id, address, url, request, self._clock() + timeout, timeout, sock)
        try:
            code = sock.connect_ex((address.host, address.port))
        except OSError as exc:  # an address that cannot even be tried
            sock.close()
            return [exchange.result(False, _said(exc))]
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return [exchange.result(False, _said(_os_error(code)))]
        self._open[sock.fileno()] = exchange
        self._selector.register(sock, selectors.EVENT_WRITE, exchange)
        return []

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._open.values()), default=None)

    def poll(self, timeout: float | None) -> list[ProbeResult]:
        """Wait up to ``timeout`` seconds (None: until something happens) and move every
        ready probe on; the probes that ended, and those whose time ran out."""
        results: list[ProbeResult] = []
        for key, mask in self._selector.select(timeout):
            exchange = key.data
            if exchange is None:
                self._drain_wake_ups()
                continue
            result = self._step(exchange, mask)
            if result is not None:
                results.append(result)
        now = self._clock()
        for exchange in [e for e in self._open.values() if e.deadline <= now]:
            self._end(exchange)
            said = f"TimeoutError: no answer within {exchange.timeout:g} s"
            results.append(exchange.result(False, said))
        return results

    def _step(self, exchange: _Exchange, mask: int) -> ProbeResult | None:
        sock = exchange.sock
        try:
            if mask & selectors.EVENT_WRITE and not exchange.connected:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise _os_error(code)
                exchange.connected = True
                sock.sendall(exchange.request)  # a few dozen bytes: the buffer takes them
                self._selector.modify(sock, selectors.EVENT_READ, exchange)
                return None
            if mask & selectors.EVENT_READ:
                return self._read(exchange)
        except OSError as exc:
            self._end(exchange)
            return exchange.result(False, _said(exc))
        return None

    def _read(self, exchange: _Exchange) -> ProbeResult | None:
        chunk = exchange.sock.recv(4096)
        exchange.received += chunk
        if b"\r\n" not in exchange.received and chunk and len(exchange.received) < 4096:
            return None  # the status line is not complete yet
        self._end(exchange)
        line = exchange.received.split(b"\r\n", 1)[0]
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            answer = f"not an HTTP answer: {line[:80]!r}" if line else "no answer (closed)"
            return exchange.result(False, answer)
        status = int(parts[1])
        return exchange.result(200 <= status < 400, f"HTTP {status}")

    def _end(self, exchange: _Exchange) -> None:
        sock = exchange.sock
        self._open.pop(sock.fileno(), None)
        self._selector.unregister(sock)
        try:
            while sock.recv(65536):  # what the answer has left, so the close sends no reset
                pass
        except OSError:
            pass  # nothing more to read (or the peer is gone): either way, done with it
        sock.close()

    def _drain_wake_ups(self) -> None:
        try:
            while self._waker.recv(4096):
                pass
        except BlockingIOError:
            return


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))  # the subclass for it: ConnectionRefusedError...


def _said(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def http_probe(address: Address, path: str, timeout: float) -> tuple[bool, str]:
    """One probe, waited for: passed, and the line saying what it got."""
    prober = Prober()
    try:
        results = prober.begin("probe", address, path, timeout)
        while not results and prober.busy():
            results = prober.poll(timeout)
    finally:
        prober.close()
    return results[0].passed, results[0].output


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
    """Probes every tracked task when it is due, all from one thread (see Prober).

    ``on_change(key)`` is called (on that thread) when a judgement of one of that stage's
    tasks changes. ``due`` and ``record`` are the scheduling steps, which tests drive
    without the thread.
    """

    def __init__(
        self, on_change: Callable[[Key], None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._prober: Prober | None = None  # made by start(), for the thread
        self._tracked: dict[str, _Tracked[Key]] = {}
        self._heap: list[_Due] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- what the stage loops say

    def track(
        self, key: Key, tasks: Mapping[str, tuple[Address, HealthSettings]], now: float
    ) -> None:
        """The stage's running tasks as just observed, each with its own release's check:
        probe the new ones from now on, forget the ones that are gone (or no longer
        probed). A task keeps its judgement when its settings change; they apply from its
        next probe."""
        probed = {task_id: task for task_id, task in tasks.items() if task[1].probed}
        with self._condition:
            for task_id in [i for i, t in self._tracked.items() if t.key == key]:
                if task_id not in probed:
                    del self._tracked[task_id]
            for task_id, (address, settings) in probed.items():
                self._track(key, task_id, address, settings, now)
        self._wake()

    def watch(self, key: Key, task_id: str, address: Address, settings: HealthSettings) -> None:
        """A task was just started: probe it at once, and often (see FAST_WINDOW)."""
        if not settings.probed:
            return
        with self._condition:
            self._track(key, task_id, address, settings, self._clock())
        self._wake()

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

    def judgements(
        self, key: Key, addresses: Mapping[str, Address] | None = None
    ) -> dict[str, Judgement]:
        """The stage's probed tasks, as last judged (STARTING until a probe decides).
        With ``addresses`` (task id -> where it answers now), only the tasks judged at that
        address: a task that moved to another node is not judged there yet."""
        with self._condition:
            return {
                task_id: Judgement(t.record.status, t.record.output)
                for task_id, t in self._tracked.items()
                if t.key == key
                and (addresses is None or addresses.get(task_id) == t.record.address)
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

    def record(
        self, task_id: str, address: Address, passed: bool, output: str, now: float
    ) -> Key | None:
        """Judge one probe's result; the task's stage when its judgement changed. A result
        from an address the task no longer answers at is dropped: a task Swarm moves
        start-first keeps running at its old address until its new one runs, and a probe
        of the old one still in flight when the stage tracks the new address said nothing
        about the new one (taken, it routed the new address before its check passed)."""
        with self._condition:
            tracked = self._tracked.get(task_id)
            if tracked is None or tracked.record.address != address:
                return None
            record = tracked.record
            before = record.status
            record.in_flight = False
            record.judge(passed, output, now)
            self._push(task_id, record.next_probe)
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
            if self._thread is not None or self._stopping:
                return
            self._prober = Prober(self._clock)
            self._thread = threading.Thread(
                target=self._run, args=(self._prober,), name="health", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout=10)

    def _wake(self) -> None:
        with self._condition:
            prober = self._prober
        if prober is not None:
            prober.wake()

    def _run(self, prober: Prober) -> None:
        try:
            while not self._stopping:
                results = []
                for task_id, address, settings in self.due(self._clock()):
                    results += prober.begin(task_id, address, settings.path, settings.timeout)
                if not results:
                    results = prober.poll(self._wait(prober, self._clock()))
                for result in results:
                    changed = self.record(
                        result.task_id, result.address, result.passed, result.output, self._clock()
                    )
                    if changed is not None:
                        self._on_change(changed)
        finally:
            prober.close()

    def _wait(self, prober: Prober, now: float) -> float | None:
        """Until the next probe is due or the first one under way times out."""
        deadline = prober.next_deadline()
        times = [self.next_due_in(now), None if deadline is None else max(0.0, deadline - now)]
        found = [t for t in times if t is not None]
        return min(found) if found else None
