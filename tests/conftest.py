"""Bounds every test's teardown, so one hang cannot stall the whole run.

pytest-timeout stops its timer as soon as a test fails (it makes room for a debugger), so a
teardown that hangs after a failure would otherwise hang the run until CI's own limit, and
with no word of where. Here a teardown that outlasts ``TEARDOWN_LIMIT`` gets a signal in
the main thread whose handler raises, which wakes even a wait on a lock: pytest reports the
teardown as an error, with the stack where it stuck, and the run goes on. Module fixtures
are torn down with their module's last test, so the limit covers them too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest
from xdist.remote import Producer
from xdist.scheduler import Scheduling

from tests.integration.lanes import LaneScheduling

TEARDOWN_LIMIT = 900.0  # seconds; the slowest module teardowns (swarm) take well under 2 min


class TeardownHang(Exception):
    pass


def _raise(signum: int, frame: FrameType | None) -> None:
    raise TeardownHang(f"the teardown was still running after {TEARDOWN_LIMIT:g} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown() -> Iterator[None]:
    previous = signal.signal(signal.SIGUSR1, _raise)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(TEARDOWN_LIMIT, signal.pthread_kill, (main, signal.SIGUSR1))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


@pytest.hookimpl(tryfirst=True)  # before xdist's own loadgroup, which pytest 9 defeats
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Scheduling | None:
    """``--dist loadgroup``: the integration tests in their lanes (tests/integration/lanes.py)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return LaneScheduling(config, log)
