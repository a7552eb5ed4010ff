"""HealthTracker probes a new task often at first, so it is routed as soon as it answers.

Probes go to a real HTTP server on loopback that starts answering when the test says so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stackyard.deploy.health import (
    FAST_PROBE_INTERVAL,
    FAST_WINDOW,
    STARTING_PROBE_INTERVAL,
    HealthSettings,
    HealthTracker,
)
from stackyard.deploy.plan import TaskHealth
from stackyard.engines.base import Health, TaskInfo, TaskState


class App(BaseHTTPRequestHandler):
    ready = False

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200 if App.ready else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def port() -> Iterator[int]:
    App.ready = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def task(port: int) -> TaskInfo:
    return TaskInfo("t1", "t1", "r@sha256:" + "0" * 64, {}, TaskState.RUNNING, Health.NONE, port)


def test_a_new_task_is_probed_every_20_ms_in_its_first_second(port: int) -> None:
    tracker = HealthTracker(HealthSettings(path="/healthz", interval=5, start_period=30))
    try:
        tracker.watch("t1", now=100.0)
        assert tracker.next_probe_in(100.0) == 0.0  # due at once
        assert tracker.assess([task(port)], 100.0) == {"t1": TaskHealth.STARTING}
        assert tracker.next_probe_in(100.0) == pytest.approx(FAST_PROBE_INTERVAL)
        late = 100.0 + FAST_WINDOW + 0.5
        tracker.assess([task(port)], late)
        assert tracker.next_probe_in(late) == pytest.approx(STARTING_PROBE_INTERVAL)
        App.ready = True
        assert tracker.assess([task(port)], late + 1) == {"t1": TaskHealth.HEALTHY}
        assert tracker.next_probe_in(late + 1) is None  # nothing starting: the loop may idle
    finally:
        tracker.close()
