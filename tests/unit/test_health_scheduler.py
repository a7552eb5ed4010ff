"""The health scheduler: one heap of due probes for every stage, judged into TaskHealth.

The scheduling steps (``due``, ``record``) are driven with explicit times; the HTTP probe
goes to a real server on loopback that answers what the test says; one test runs the
scheduler's thread and waits (bounded) for the wake-up of the stage.
"""

from __future__ import annotations

import socket
import socketserver
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
    Judgement,
    Prober,
    ProbeResult,
    ProbeScheduler,
    http_probe,
)
from stackyard.deploy.plan import TaskHealth
from stackyard.engines.base import Address
from stackyard.ports import port_free

CHECK = HealthSettings(path="/healthz", interval=5, retries=2, start_period=30)
HERE = Address("127.0.0.1", 1)


class App(BaseHTTPRequestHandler):
    status = 503

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(App.status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def serving(server: socketserver.TCPServer) -> Iterator[Address]:
    """Serve on a thread while the test runs; shut down and closed after it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Address("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def app() -> Iterator[Address]:
    App.status = 503
    yield from serving(ThreadingHTTPServer(("127.0.0.1", 0), App))


def scheduler(woken: list[str] | None = None) -> ProbeScheduler[str]:
    return ProbeScheduler((woken if woken is not None else []).append, clock=lambda: 100.0)


def test_the_http_probe_reports_the_status_and_what_it_asked(app: Address) -> None:
    assert http_probe(app, "/healthz", 2) == (False, f"GET http://{app}/healthz: HTTP 503")
    App.status = 302
    assert http_probe(app, "/healthz", 2) == (True, f"GET http://{app}/healthz: HTTP 302")


def test_a_probe_that_cannot_connect_says_why() -> None:
    closed = next(p for p in range(39000, 39100) if port_free(p))
    passed, output = http_probe(Address("127.0.0.1", closed), "/", 2)
    assert not passed
    assert output.startswith(f"GET http://127.0.0.1:{closed}/: ConnectionRefusedError")


@pytest.fixture
def silent() -> Iterator[Address]:
    """A port that accepts connections (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield Address("127.0.0.1", listener.getsockname()[1])


class Babble(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1024)
        self.request.sendall(b"hello there\r\n")


@pytest.fixture
def babbler() -> Iterator[Address]:
    yield from serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Babble))


def test_a_probe_without_an_answer_times_out(silent: Address) -> None:
    assert http_probe(silent, "/", 0.2) == (
        False,
        f"GET http://{silent}/: TimeoutError: no answer within 0.2 s",
    )


def test_an_answer_that_is_not_http_fails_the_probe(babbler: Address) -> None:
    assert http_probe(babbler, "/", 2) == (
        False,
        f"GET http://{babbler}/: not an HTTP answer: b'hello there'",
    )


def test_probes_run_side_by_side_and_a_slow_task_delays_no_other(
    app: Address, silent: Address
) -> None:
    App.status = 200
    prober = Prober()
    try:
        assert prober.begin("slow", silent, "/", 5) == []
        assert prober.begin("quick", app, "/healthz", 5) == []
        results: list[ProbeResult] = []
        while not results:
            results = prober.poll(5)
        assert [(r.task_id, r.passed) for r in results] == [("quick", True)]
        assert prober.busy()  # the slow one is still under way
    finally:
        prober.close()


def test_a_new_task_is_probed_every_20_ms_in_its_first_second() -> None:
    probes = scheduler()
    probes.watch("shop/dev", "t1", HERE, CHECK)
    assert probes.due(100.0) == [("t1", HERE, CHECK)]  # due at once
    assert probes.due(100.0) == []  # in flight: not handed out twice
    assert probes.record("t1", HERE, False, "refused", 100.0) is None  # still STARTING
    assert probes.next_due_in(100.0) == pytest.approx(FAST_PROBE_INTERVAL)
    late = 100.0 + FAST_WINDOW + 0.5
    assert [d[0] for d in probes.due(late)] == ["t1"]
    probes.record("t1", HERE, False, "refused", late)
    assert probes.next_due_in(late) == pytest.approx(STARTING_PROBE_INTERVAL)
    assert probes.judgements("shop/dev") == {"t1": Judgement(TaskHealth.STARTING, "refused")}


def test_only_a_changed_judgement_wakes_the_stage() -> None:
    probes = scheduler()
    probes.watch("shop/dev", "t1", HERE, CHECK)
    probes.due(100.0)
    assert probes.record("t1", HERE, True, "HTTP 200", 100.0) == "shop/dev"  # STARTING -> HEALTHY
    assert probes.next_due_in(100.0) == pytest.approx(CHECK.interval)
    probes.due(105.0)
    assert probes.record("t1", HERE, True, "HTTP 200", 105.0) is None


def test_a_task_that_moved_is_not_judged_at_its_new_address_until_probed_there() -> None:
    """A swarm task rescheduled onto another node keeps its id: its judgement at the old
    address must not route the new one (the stage may see it run there before it tracks
    the move); tracked at the new address, it starts over."""
    probes = scheduler()
    probes.watch("shop/dev", "t1", HERE, CHECK)
    probes.due(100.0)
    probes.record("t1", HERE, True, "HTTP 200", 100.0)
    there = Address("127.0.0.3", 1)
    assert probes.judgements("shop/dev", {"t1": HERE})["t1"].health is TaskHealth.HEALTHY
    assert probes.judgements("shop/dev", {"t1": there}) == {}
    probes.track("shop/dev", {"t1": (there, CHECK)}, 101.0)
    assert probes.judgements("shop/dev", {"t1": there})["t1"].health is TaskHealth.STARTING
    assert probes.due(101.0) == [("t1", there, CHECK)]


def test_a_probe_of_the_old_address_in_flight_when_the_task_moved_does_not_judge_the_new_one() -> (
    None
):
    """Swarm moving a task start-first: the old task still runs (and passes) at its old
    address when the stage tracks the new one. The probe of the old address that was under
    way then must not make the new address healthy: it is judged by its own probes only."""
    probes = scheduler()
    probes.watch("shop/dev", "t1", HERE, CHECK)
    probes.due(100.0)
    probes.record("t1", HERE, True, "HTTP 200", 100.0)
    assert probes.due(105.0) == [("t1", HERE, CHECK)]  # under way at the old address ...
    there = Address("127.0.0.3", 1)
    probes.track("shop/dev", {"t1": (there, CHECK)}, 105.1)  # ... when the task moves
    assert probes.record("t1", HERE, True, "HTTP 200", 105.2) is None
    assert probes.judgements("shop/dev", {"t1": there})["t1"].health is TaskHealth.STARTING
    assert probes.due(105.2) == [("t1", there, CHECK)]  # the new address is probed at once
    assert probes.record("t1", there, False, "HTTP 404", 105.3) is None
    assert probes.judgements("shop/dev", {"t1": there})["t1"].health is TaskHealth.STARTING
    probes.due(106.0)
    assert probes.record("t1", there, True, "HTTP 200", 106.0) == "shop/dev"
    assert probes.judgements("shop/dev", {"t1": there})["t1"].health is TaskHealth.HEALTHY


def test_after_the_start_period_retries_failures_make_it_unhealthy() -> None:
    probes = scheduler()
    probes.watch("shop/dev", "t1", HERE, CHECK)
    probes.due(100.0)
    probes.record("t1", HERE, True, "HTTP 200", 100.0)
    probes.due(105.0)
    assert probes.record("t1", HERE, False, "HTTP 500", 105.0) is None  # 1 of 2 retries
    probes.due(110.0)
    assert probes.record("t1", HERE, False, "HTTP 500", 110.0) == "shop/dev"
    assert probes.judgements("shop/dev")["t1"] == Judgement(TaskHealth.UNHEALTHY, "HTTP 500")


def test_failures_in_the_start_period_do_not_count() -> None:
    probes = scheduler()
    probes.watch("shop/dev", "t1", HERE, CHECK)
    for at in (100.0, 101.0, 102.0, 103.0):
        probes.due(at)
        assert probes.record("t1", HERE, False, "refused", at) is None
    assert probes.judgements("shop/dev")["t1"].health is TaskHealth.STARTING


def test_track_follows_the_stages_tasks_and_forgets_the_gone() -> None:
    probes = scheduler()
    probes.track("shop/dev", {"t1": (HERE, CHECK), "t2": (HERE, CHECK)}, 100.0)
    probes.track("shop/prod", {"p1": (HERE, CHECK)}, 100.0)
    assert sorted(d[0] for d in probes.due(100.0)) == ["p1", "t1", "t2"]
    probes.track("shop/dev", {"t2": (HERE, CHECK)}, 100.0)
    assert set(probes.judgements("shop/dev")) == {"t2"}
    assert set(probes.judgements("shop/prod")) == {"p1"}
    probes.forget("shop/prod")
    assert probes.judgements("shop/prod") == {}


def test_a_stage_with_the_image_healthcheck_is_not_probed() -> None:
    probes = scheduler()
    image_check = HealthSettings(type="docker")
    probes.track("shop/dev", {"t1": (HERE, CHECK)}, 100.0)
    probes.track("shop/dev", {"t1": (HERE, image_check), "t3": (HERE, image_check)}, 100.0)
    assert probes.judgements("shop/dev") == {}
    probes.watch("shop/dev", "t2", HERE, HealthSettings(type="docker"))
    assert probes.due(200.0) == []


def test_new_settings_keep_the_judgement_and_apply_from_the_next_probe() -> None:
    probes = scheduler()
    probes.track("shop/dev", {"t1": (HERE, CHECK)}, 100.0)
    probes.due(100.0)
    probes.record("t1", HERE, True, "HTTP 200", 100.0)
    faster = HealthSettings(path="/ready", interval=1, retries=2, start_period=30)
    probes.track("shop/dev", {"t1": (HERE, faster)}, 101.0)
    assert probes.judgements("shop/dev")["t1"].health is TaskHealth.HEALTHY
    assert probes.due(101.0) == []
    assert probes.due(102.0) == [("t1", HERE, faster)]


def test_the_scheduler_thread_probes_and_wakes_the_stage_once_healthy(app: Address) -> None:
    woken = threading.Event()
    keys: list[str] = []

    def wake(key: str) -> None:
        keys.append(key)
        woken.set()

    probes: ProbeScheduler[str] = ProbeScheduler(wake)
    probes.start()
    try:
        App.status = 200
        probes.watch("shop/dev", "t1", app, CHECK)
        assert woken.wait(timeout=10)
        assert keys == ["shop/dev"]
        assert probes.judgements("shop/dev")["t1"] == Judgement(
            TaskHealth.HEALTHY, f"GET http://{app}/healthz: HTTP 200"
        )
    finally:
        probes.stop()
