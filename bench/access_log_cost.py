"""The cost of access logging and counting: wrk's requests per second through the data
plane's Caddies to a stage whose port route writes the access log while the traffic
counter folds it into the state database, next to the same without a log, in one run.

A real data plane (the keeper, two Caddies) on loopback, as in bench/tls_cost.py, and three
backends, each in its own process: ``caddy respond`` (fast, keeps upstream connections:
what is left is mostly the router's own work, so the log's share is as large as it gets),
Python's ``http.server`` (a slow app), and the project's example app (``examples/hello``,
what the README's demo deploys: busybox httpd serving a page), built by the Docker engine
and run as the ``docker`` plugin runs a stage's task (the plugin's own container options:
host network, ``--init``, a stage's default 0.5 cores and 256 MiB, the hardening). Per
backend two port routes on the same Caddies: ``logged``, as the router makes every port
route (its JSON access log per Caddy), and ``unlogged``, the same server with its ``logs``
removed through the admin API. Three kinds of run: ``unlogged``; ``logged`` (the lines are
counted after the run, out of wrk's time); ``logged+counted``, with the product's
TrafficCounter (its own state database in the bench's directory, the stage's route row)
counting every second meanwhile, so its parsing and writing compete with Caddy for the same
2 cores (the control plane counts every 10 s: the same work in larger batches). After each
logged run the store must hold wrk's requests plus at most one per connection (the last
ones, answered after wrk stops counting). ``wrk -t2 -c16 --latency`` for ``--seconds`` per
run, ``--runs`` rounds, the order reversed every other round; medians of the rounds.

Usage:
    .venv/bin/python -m bench.access_log_cost [--runs 5] [--seconds 10] [--no-write]
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from tests.integration.wrk import PIN_LOOPBACK
from tests.router_contract import free_port

from stackyard.deploy.trafficstore import TrafficCounter
from stackyard.engines.base import TaskSpec
from stackyard.engines.docker import container_arguments
from stackyard.platform.dataplane import ensure_dataplane, stop_dataplane
from stackyard.router.base import Route
from stackyard.router.caddy import DEFAULT_LOG, AdminRequest, CaddyRouter, default_log, server_id
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import AccessLogPosition, Stack, StageRoute, TrafficBucket

from .tls_cost import (
    CONNECTIONS,
    THREADS,
    Respond,
    Run,
    answers,
    interleaved,
    table_row,
    wrk,
    wrk_bench_main,
)

BACKENDS = ("caddy respond", "http.server", "example app")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"
# The logged route as before the default log excluded the access lines: each line also
# went to Caddy's own log (stderr, logs/caddy-N.log), encoded and written a second time.
BEFORE = "logged, before"
SIDES = ("unlogged", BEFORE, "logged", "logged+counted")
ROLLED = re.compile(r"-\d{4}-\d\d-\d\dT[\d.-]+\.log$")  # Caddy's name for a rolled file


@dataclass
class Figures:
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)  # (backend, side)
    extra: list[int] = field(default_factory=list)  # counted - wrk's requests, per logged run
    count_seconds: list[float] = field(default_factory=list)  # the counter's busy time per run
    files: set[tuple[int, int]] = field(default_factory=set)  # log files read
    rolled: set[tuple[int, int]] = field(default_factory=set)  # those read after a roll
    load: list[float] = field(default_factory=list)


class PythonApp(Respond):
    """``python -m http.server`` in its own process on a free port, stopped by pid as
    ``Respond`` is."""

    def __init__(self, directory: Path) -> None:
        root = directory / "app"
        root.mkdir()
        (root / "index.html").write_text("app")
        port = free_port()
        self.dial = f"127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip


class ExampleApp(Respond):
    """``examples/hello`` built by the engine (``docker build``; the image is left in the
    engine's cache, untagged) and started with the ``docker`` plugin's options for a task
    of a stage with default limits, on a free port; the container removed by its id."""

    def __init__(self, directory: Path) -> None:
        port = free_port()
        self.dial = f"127.0.0.1:{port}"
        built = subprocess.run(["docker", "build", "-q", str(EXAMPLE)], check=True,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
        image = built.stdout.strip()
        spec = TaskSpec(name=f"stackyard-bench-{directory.name}", image=image, port=port,
                        labels={"stackyard.bench": "access_log_cost"})  # fmt: skip
        arguments, host_options = container_arguments(spec)
        self.api = docker.from_env(timeout=60).api
        host_config = self.api.create_host_config(**host_options)
        self.container = self.api.create_container(image, **arguments, host_config=host_config)
        self.api.start(self.container)

    def stop(self) -> None:
        self.api.remove_container(self.container, force=True)
        self.api.close()


class TimedCounter(TrafficCounter):
    """The product's counter, adding up the time its counts take."""

    busy = 0.0

    def count(self) -> int:
        started = time.perf_counter()
        try:
            return super().count()
        finally:
            self.busy += time.perf_counter() - started


def stored(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        total = session.scalar(select(func.coalesce(func.sum(TrafficBucket.requests), 0)))
        return int(total or 0)


def measure(runs: int, seconds: int, directory: Path) -> Figures:
    settings = Settings(data_dir=directory / "data", registry_port=free_port())
    settings.data_dir.mkdir(mode=0o700, parents=True)
    ensure_dataplane(settings)
    apps: dict[str, Respond] = {
        "caddy respond": Respond(directory),
        "http.server": PythonApp(directory),
        "example app": ExampleApp(directory),
    }
    router = CaddyRouter(settings.caddy_admin_sockets, settings.dataplane_socket, timeout=20.0)
    database = open_database(f"sqlite:///{directory / 'state.db'}")
    migrate(database)
    sessions = session_factory(database)
    pin = directory / "pin-loopback.lua"
    pin.write_text(PIN_LOOPBACK)
    try:
        urls = routes(router, sessions, {name: app.dial for name, app in apps.items()})
        TrafficCounter(sessions, router, interval=0).count()  # what the warm-up logged
        figures = Figures(runs={key: [] for key in urls})
        interleaved(runs, list(urls), figures.runs, figures.load,
                    lambda key: one_run(figures, sessions, router, key[1], urls[key], seconds,
                                        pin))  # fmt: skip
        return figures
    finally:
        router.close()
        for app in apps.values():
            app.stop()
        stop_dataplane(settings)
        database.dispose()


def routes(
    router: CaddyRouter, sessions: sessionmaker[Session], dials: dict[str, str]
) -> dict[tuple[str, str], str]:
    """Per backend a logged and an unlogged port route (the latter's log removed), the
    logged one a stage's route in the state database; the URL of each kind of run."""
    urls: dict[tuple[str, str], str] = {}
    with sessions.begin() as session:
        stack = Stack(name="bench", repo="https://example.invalid/bench.git")
        session.add(stack)
        session.flush()
        for n, (backend, dial) in enumerate(dials.items()):
            logged, unlogged = free_port(), free_port()
            router.ensure_route(Route(f"bench-logged{n}", port=logged), [dial])
            router.ensure_route(Route(f"bench-unlogged{n}", port=unlogged), [dial])
            for admin in router.admins:
                path = f"/config/apps/http/servers/{server_id(f'bench-unlogged{n}')}/logs"
                admin.send(AdminRequest("DELETE", path))
            session.add(StageRoute(stack_id=stack.id, stage=f"logged{n}", port=logged))
            urls[backend, "unlogged"] = f"http://127.0.0.1:{unlogged}/"
            for side in SIDES[1:]:
                urls[backend, side] = f"http://127.0.0.1:{logged}/"
    for url in set(urls.values()):
        answers(url, "127.0.0.1")
    return urls


def own_log(router: CaddyRouter, config: dict[str, object] | None) -> None:
    """Caddy's default log as ``config`` on every Caddy; None: Caddy's own default (every
    logger's lines, the access lines too)."""
    path = f"/config/logging/logs/{DEFAULT_LOG}"
    for admin in router.admins:
        if config is None:
            admin.send(AdminRequest("DELETE", path))
        else:
            admin.send(AdminRequest("PUT", path, config))


def one_run(
    figures: Figures,
    sessions: sessionmaker[Session],
    router: CaddyRouter,
    side: str,
    url: str,
    seconds: int,
    pin: Path,
) -> Run:
    """One wrk run; on the logged route the counter counts meanwhile (logged+counted) or
    right after it (logged), and the store must have grown by wrk's requests."""
    if side == "unlogged":
        return wrk(url, seconds, pin)
    before = stored(sessions)
    counter = TimedCounter(sessions, router, interval=1.0)
    if side == "logged+counted":
        counter.start()
    try:
        if side == BEFORE:
            own_log(router, None)
        run = wrk(url, seconds, pin)
    finally:
        counter.stop()
        if side == BEFORE:
            own_log(router, default_log())
    counter.count()  # the last second's lines, or all of them
    figures.extra.append(stored(sessions) - before - run.requests)
    if side == "logged+counted":
        figures.count_seconds.append(counter.busy)
    with sessions() as session:
        found = session.execute(
            select(AccessLogPosition.device, AccessLogPosition.inode, AccessLogPosition.path)
        )
        for device, inode, path in found:
            figures.files.add((device, inode))
            if ROLLED.search(Path(path).name):
                figures.rolled.add((device, inode))
    return run


def report(figures: Figures, runs: int, seconds: int) -> str:
    rate = {
        k: statistics.median(r.requests_per_second for r in rs) for k, rs in figures.runs.items()
    }

    def cost(backend: str) -> str:
        base = rate[backend, "unlogged"]
        spread = max(r.requests_per_second for r in figures.runs[backend, "unlogged"]) - min(
            r.requests_per_second for r in figures.runs[backend, "unlogged"]
        )
        both = 1 - rate[backend, "logged+counted"] / base
        alone = 1 - rate[backend, "logged"] / base
        before = 1 - rate[backend, BEFORE] / base
        return (f"| {backend} | **{both * 100:.1f} %** | {alone * 100:.1f} % "
                f"| {before * 100:.1f} % | {spread / base * 100:.0f} % |")  # fmt: skip

    # a line Caddy writes after one run's last count is counted in the next run's: the
    # bound holds for the sum of the runs, not for each
    exact = 0 <= sum(figures.extra) <= CONNECTIONS * len(figures.extra)
    return "\n".join([
        "## The cost of access logging and counting",
        "",
        f"`wrk -t{THREADS} -c{CONNECTIONS} --latency -d{seconds}s` (keep-alive) through the "
        "data plane's two Caddies to a port route whose access log is on, while the traffic "
        "counter folds it into the state database every second (`logged+counted`), with "
        "the counting after the run (`logged`), and to the same route with its log removed "
        f"(`unlogged`); `{BEFORE}`: as `logged`, with Caddy's default log as before "
        "(every access line also written to Caddy's own log, logs/caddy-N.log). "
        "Three backends, each its own process: `caddy respond` (fast: mostly "
        "the router's own work), Python's `http.server` (a slow app) and the example app "
        "the README's demo deploys (`examples/hello`: busybox httpd, in a container with "
        "the `docker` plugin's options for a task with a stage's default limits, 0.5 "
        "cores). "
        f"{runs} rounds, interleaved, medians:",
        "",
        "| backend | run | requests/s | p99 latency (ms) | failed | requests/s per round |",
        "|---|---|---|---|---|---|",
        *(table_row(key, each) for key, each in figures.runs.items()),
        "",
        "Fewer requests per second than without a log (goal: logging and counting under 5 %):",
        "",
        "| backend | log + counting | log alone | log alone, before | "
        "unlogged runs' own spread |",
        "|---|---|---|---|---|",
        *(cost(backend) for backend in BACKENDS),
        "",
        f"Counted: after every logged run the store had grown by wrk's requests plus "
        f"{min(figures.extra)}-{max(figures.extra)} "
        f"({'in all within' if exact else 'NOT within'} 0-{CONNECTIONS} per run: the last "
        "request of each connection, answered and logged after wrk stopped counting, some "
        f"of them counted with the next run), over "
        f"{len(figures.files)} log files, {len(figures.rolled)} of them rolled over (10 MB) "
        "while being counted. The counter's own time (nice 19): "
        f"{statistics.median(figures.count_seconds):.2f} s per {seconds} s run (median).",
        "",
        "The machine has 2 cores, at times shared with other engineers' test runs: 1-minute "
        f"load average {min(figures.load):.1f}-{max(figures.load):.1f} at the start of the "
        "rounds; "
        "wrk, both Caddies, the backend and the counter compete for the same 2 cores.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.access_log_cost --runs {runs} "
        f"--seconds {seconds}`",
    ])  # fmt: skip


def main() -> None:
    wrk_bench_main("access_log_cost", __doc__, measure, report)


if __name__ == "__main__":
    main()
