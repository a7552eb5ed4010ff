"""A named thread that does one piece of work every few seconds and outlives its failures:
the certificate watch (certwatch.py) and the traffic counter (trafficstore.py) run on one."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from stackyard.errors import StackyardError

log = logging.getLogger(__name__)


class Ticker:
    """Calls ``work`` every ``interval`` seconds from ``start`` to ``stop``; ``doing`` says
    what it is in the log lines of its failures (the next tick tries again). With ``nice``
    (Linux: a thread's own nice value) the thread gives way to every busier process, the
    router's Caddies among them, when the machine's cores are all taken."""

    def __init__(
        self,
        name: str,
        doing: str,
        interval: float,
        work: Callable[[], object],
        *,
        nice: int = 0,
    ) -> None:
        self.name = name
        self.doing = doing
        self.interval = interval
        self.nice = nice
        self._work = work
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        if self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError as exc:  # a platform without per-thread priorities: runs as is
                log.info("%s runs at normal priority: %s", self.name, exc)
        while not self._stopping.wait(self.interval):
            try:
                self._work()
            except StackyardError as exc:
                log.warning("%s: %s (the next look tries again)", self.doing, exc)
            except Exception:  # the thread must outlive any one failure
                log.exception("%s failed", self.doing)
