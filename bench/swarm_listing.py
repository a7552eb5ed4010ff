"""What the swarm task watch's once-a-second listing costs as the swarm grows.

Each second a swarm platform's task watch lists its own services and their Swarm tasks
(``SwarmEngine.list``: ``GET /services`` and ``GET /tasks`` by the platform's label, and
``GET /nodes``) and, at most once a second, what runs on every node
(``SwarmEngine.node_use``: ``GET /tasks`` of every service meant to run). This bench makes
the swarm hold 10, 100 and 300 one-replica services (busybox sleeping, host network, no
reservations, restart condition none, as the platform's tasks are), all labelled as one
platform's, and for each size times ``--runs`` such ticks one second apart with the engine's
own code: the latency of each call, the bench's own CPU per tick (what the control plane
pays to fetch and decode), and the manager's (n1's dockerd) CPU over the ticks against the
same span without listing.

The swarm is the test swarm of ``scripts/setup-host --swarm-nodes 3`` and must be up; it
is shared, so the bench creates only services named ``bench-listing-<run>-<n>`` and
removes exactly those, by id, one at a time (Swarm 20.10's manager once panicked while
many services were removed at once next to another session's). The busybox image is
loaded on each node by id (no tag; a task started by image id is never pulled) when the
node lacks it, and removed from the nodes it was loaded on at the end. Bounded: each size
waits at most 180 s for its tasks to run. Nothing is sent outside the machine.

Usage: .venv/bin/python -m bench.swarm_listing [--runs 15] [--sizes 10,100,300] [--settle 60]
       [--no-write]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker

from bench.report import update_section
from stackyard.engines.swarm import SwarmEngine

SWARM_DIR = Path("/run/stackyard-swarm")
MANAGER = f"unix://{SWARM_DIR / 'n1.sock'}"
NODES = ("n1", "n2", "n3")
IMAGE = "busybox:latest"  # on this machine's own engine (setup-host puts it there)
LABEL = "dev.stackyard.platform"  # the services look like one platform's tasks
WAIT_RUNNING = 180.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Size:
    services: int
    tasks_in_swarm: int  # every task meant to run, whoever's (node_use counted them)
    list_ms: list[float] = field(default_factory=list)  # SwarmEngine.list (own label)
    use_ms: list[float] = field(default_factory=list)  # SwarmEngine.node_use (all tasks)
    client_cpu_ms: list[float] = field(default_factory=list)  # this process, per tick
    manager_cpu: float = 0.0  # n1 dockerd's CPU share while listing, %
    manager_idle_cpu: float = 0.0  # ... over the same span without listing, %
    load: str = ""


def _dockerd_cpu_seconds() -> float:
    pid = int((SWARM_DIR / "n1.pid").read_text().strip())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@contextmanager
def _image_on_nodes() -> Iterator[str]:
    """The busybox image's id, present on every node; loaded where missing (by id, so no
    tag is added) and removed from those nodes afterwards."""
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    saved = subprocess.run(
        ["docker", "save", image_id], check=True, capture_output=True, timeout=60
    ).stdout
    loaded = []
    try:
        for node in NODES:
            host = f"unix://{SWARM_DIR / f'{node}.sock'}"
            present = subprocess.run(
                ["docker", "-H", host, "image", "inspect", image_id],
                capture_output=True, timeout=30,
            ).returncode == 0  # fmt: skip
            if not present:
                subprocess.run(
                    ["docker", "-H", host, "load", "-q"],
                    input=saved, check=True, capture_output=True, timeout=60,
                )  # fmt: skip
                loaded.append(host)
        yield image_id
    finally:
        # A node removes a removed service's container a little after the manager stops
        # listing its task: try each node again for a while.
        deadline = time.monotonic() + 120
        while loaded and time.monotonic() < deadline:
            for host in list(loaded):
                removed = subprocess.run(
                    ["docker", "-H", host, "rmi", image_id], capture_output=True, timeout=60
                )
                if removed.returncode == 0:
                    loaded.remove(host)
            if loaded:
                time.sleep(2)
        for host in loaded:
            print(f"warning: could not remove image {image_id} from {host}")


class Services:
    """The bench's services on the shared swarm: created and removed by id, one at a time."""

    def __init__(self, api: docker.APIClient, image: str, run: str) -> None:
        self._api, self._image, self._run = api, image, run
        self.ids: list[str] = []
        self.label = {LABEL: f"bench-listing-{run}"}

    def grow_to(self, count: int) -> None:
        while len(self.ids) < count:
            spec = docker.types.TaskTemplate(
                container_spec=docker.types.ContainerSpec(
                    self._image, ["sleep", "3600"], labels=self.label
                ),
                resources=docker.types.Resources(mem_limit=16 * 1024**2),
                restart_policy=docker.types.RestartPolicy(condition="none"),
                networks=["host"],
            )
            created = self._api.create_service(
                spec, name=f"bench-listing-{self._run}-{len(self.ids):03d}", labels=self.label
            )
            self.ids.append(str(created["ID"]))

    def wait_running(self) -> None:
        deadline = time.monotonic() + WAIT_RUNNING
        filters = {"label": [f"{k}={v}" for k, v in self.label.items()]}
        while True:
            tasks = self._api.tasks(filters={**filters, "desired-state": "running"})
            running = sum(t["Status"]["State"] == "running" for t in tasks)
            if running >= len(self.ids):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{running} of {len(self.ids)} tasks running after {WAIT_RUNNING:.0f} s"
                )
            time.sleep(1)

    def remove_all(self) -> None:
        for service_id in reversed(self.ids):
            with suppress(docker.errors.NotFound):
                self._api.remove_service(service_id)
            time.sleep(0.05)  # one at a time: see the module's docstring
        self.ids.clear()

    def wait_gone(self, timeout: float = 180.0) -> bool:
        """Until no container of the bench's tasks is left (so the image can go)."""
        deadline = time.monotonic() + timeout
        filters = {"label": [f"{k}={v}" for k, v in self.label.items()]}
        while time.monotonic() < deadline:
            if not self._api.tasks(filters=filters):
                return True
            time.sleep(1)
        return False


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def measure_size(engine: SwarmEngine, services: Services, ticks: int) -> Size:
    size = Size(len(services.ids), sum(u.tasks for u in engine.node_use().values()))
    size.load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    # The manager idle (as far as the bench goes) for as long as the ticks will take.
    before, wall = _dockerd_cpu_seconds(), time.monotonic()
    time.sleep(ticks)
    size.manager_idle_cpu = (_dockerd_cpu_seconds() - before) / (time.monotonic() - wall) * 100
    before, wall = _dockerd_cpu_seconds(), time.monotonic()
    for _ in range(ticks):
        start = time.monotonic()
        cpu = time.process_time()
        size.list_ms.append(_timed(lambda: engine.list(services.label)))
        size.use_ms.append(_timed(engine.node_use))
        size.client_cpu_ms.append((time.process_time() - cpu) * 1000)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
    size.manager_cpu = (_dockerd_cpu_seconds() - before) / (time.monotonic() - wall) * 100
    return size


def measure(ticks: int, sizes: list[int], settle: float) -> list[Size]:
    run = secrets.token_hex(3)
    api = docker.APIClient(base_url=MANAGER, timeout=60)
    engine = SwarmEngine(MANAGER)
    results = []
    try:
        with _image_on_nodes() as image_id:
            services = Services(api, image_id, run)
            try:
                for count in sizes:
                    services.grow_to(count)
                    services.wait_running()
                    time.sleep(settle)  # starting 100s of containers loads the machine
                    results.append(measure_size(engine, services, ticks))
                    print(_row(results[-1]), flush=True)
            finally:
                services.remove_all()
                if not services.wait_gone():
                    print("warning: the bench's tasks were still listed after 180 s")
    finally:
        engine.close()
        api.close()
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else _median(values)


def _row(s: Size) -> str:
    return (
        f"| {s.services} | {s.tasks_in_swarm} | {_median(s.list_ms):.0f} / {_p90(s.list_ms):.0f} "
        f"| {_median(s.use_ms):.0f} / {_p90(s.use_ms):.0f} "
        f"| {_median([a + b for a, b in zip(s.list_ms, s.use_ms, strict=True)]):.0f} "
        f"| {_median(s.client_cpu_ms):.0f} | {s.manager_cpu:.1f} ({s.manager_idle_cpu:.1f}) "
        f"| {s.load} |"
    )


def report(ticks: int, results: list[Size], settle: float) -> str:
    lines = [
        "## The swarm task watch's listing as the swarm grows",
        "",
        "Each second the swarm engine's task watch lists its services and their Swarm tasks",
        "(`SwarmEngine.list`: `GET /services` and `GET /tasks` by the platform's label, and",
        "`GET /nodes`) and what runs on each node (`SwarmEngine.node_use`: `GET /tasks` of",
        "every service). One-replica busybox services (all labelled as one platform's) on",
        f"the three-node test swarm; {ticks} ticks one second apart per size, {settle:.0f} s after",
        "its tasks all ran, the engine's own code over the manager's unix socket. Latency in",
        "ms, median / p90; client CPU: this",
        "process per tick (fetch and decode); manager CPU: n1's dockerd over the ticks, and",
        "in brackets over the same span just before without listing (the swarm is shared",
        "with other sessions' tests, so both include their work).",
        "",
        "| services | tasks in swarm | list ms | node_use ms | tick ms (median) "
        "| client CPU ms/tick | manager CPU % (idle) | load 1/5/15 min |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(s) for s in results),
        "",
        "Reproduce: `.venv/bin/python -m bench.swarm_listing --runs "
        f"{ticks} --sizes {','.join(str(s.services) for s in results)} --settle {settle:.0f}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="ticks per size")
    parser.add_argument("--sizes", default="10,100,300")
    parser.add_argument(
        "--settle", type=float, default=60, help="seconds between the tasks running and the ticks"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    body = report(args.runs, measure(args.runs, sizes, args.settle), args.settle)
    print(body)
    if not args.no_write:
        update_section("swarm_listing", body)


if __name__ == "__main__":
    main()
