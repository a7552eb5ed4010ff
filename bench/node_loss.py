"""A node of the swarm SIGKILLed under load: the requests that fail, and how long until the
stage is whole again, split into Stackyard's part and Swarm's.

The cluster is the test swarm of ``scripts/setup-host --swarm-nodes 3`` (started when it is
not there, stopped at the end by the pids in its pid files; a swarm that was there is left
running). One platform (``stackyard up --engine swarm``) serves a stage of 2 replicas of
``examples/hello`` on two nodes (spread: node; health every 0.5 s, 2 retries). Each run:

1. ``wrk -t2 -c8`` against the stage's route (at most 90 s);
2. 3 s in, the worker holding one of the tasks dies as a machine does: its dockerd,
   containerd, shims and container processes SIGKILLed at once (``SwarmCluster.kill``, as
   in tests/integration/swarm/test_swarm_faults.py);
3. the API is polled every 0.2 s for: the dead task no longer *healthy* (Stackyard's own
   detection: its probes fail), 2 healthy running tasks on the surviving nodes (the
   replacement started elsewhere and passed its check), the node ``down`` (Swarm's own
   detection, its dispatcher heartbeat), and ``check`` converged with no task listed on
   the dead node (the listing follows Swarm's detection);
4. the load stops 2 s after that; wrk's failures are split by kind: connect (refused),
   timeout, read (a response cut off, or a connection closed, mid-way), write, non-2xx;
5. the node is started again and rejoins (``setup-host``), before the next run.

Traffic goes to 127.0.0.0/8 only; every process the bench starts is stopped by its pid.
Usage (as root: it may start Docker daemons):
    .venv/bin/python -m bench.node_loss [--runs 3] [--no-write]
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tests.integration.gitrepo import GitRepo
from tests.integration.swarm.cluster import STAGE, stage_url
from tests.integration.swarm.conftest import SwarmCluster
from tests.integration.wrk import Load, WrkResult

from bench.report import bench_main
from bench.swarm import bench_platform

CONNECTIONS = 8
LOAD_BOUND = 90  # seconds: the most any one load runs
BEFORE_KILL = 3.0  # seconds of load before the kill
AFTER = 2.0  # seconds of load once the stage is whole again
BOUND = 120.0  # seconds: the most a run waits for any of its moments
POLL = 0.2
STACK = "loss"
_WANTED = ("noticed", "healthy", "detected", "settled")


@dataclass
class Run:
    victim: str
    wrk: WrkResult
    noticed: float  # s after the kill: the dead task no longer healthy (Stackyard's probes)
    healthy: float  # 2 healthy running tasks on the surviving nodes
    detected: float  # Swarm marks the node down
    settled: float  # check converged, no task listed on the dead node


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)


def listed(api: httpx.Client, path: str, key: str) -> list[dict[str, Any]]:
    body = api.get(path).json()
    return list(body[key] if isinstance(body, dict) else body)


def recovery(
    api: httpx.Client, victim_id: str, doomed: set[str], killed_at: float
) -> dict[str, float]:
    """Seconds from the kill to each moment of the recovery (see the module's step 3)."""
    stage = f"/api/v1/stacks/{STACK}/stages/dev"
    moments: dict[str, float] = {}
    while len(moments) < len(_WANTED):
        now = time.monotonic() - killed_at
        if now > BOUND:
            raise RuntimeError(f"not within {BOUND:.0f} s: {sorted(set(_WANTED) - set(moments))}")
        tasks = listed(api, f"{stage}/tasks", "tasks")
        if not any(t["id"] in doomed and t["health"] == "healthy" for t in tasks):
            moments.setdefault("noticed", now)
        good = [t for t in tasks if t["state"] == "running" and t["health"] == "healthy"]
        if len([t for t in good if t["node"] != victim_id]) == 2:
            moments.setdefault("healthy", now)
        nodes = listed(api, "/api/v1/nodes", "nodes")
        if any(n["id"] == victim_id and n["state"] == "down" for n in nodes):
            moments.setdefault("detected", now)
        state = api.get(f"{stage}/check").json()
        if state["converged"] and all(t["node"] != victim_id for t in state["tasks"]):
            moments.setdefault("settled", now)
        time.sleep(POLL)
    return moments


def one_run(api: httpx.Client, cluster: SwarmCluster, url: str) -> Run:
    stage = f"/api/v1/stacks/{STACK}/stages/dev"
    ids = cluster.node_ids()
    names = {v: k for k, v in ids.items()}
    placed = [t for t in listed(api, f"{stage}/tasks", "tasks") if t["state"] == "running"]
    victim = next(names[t["node"]] for t in placed if names[t["node"]] != "n1")  # a worker
    victim_id = ids[victim]
    doomed = {t["id"] for t in placed if t["node"] == victim_id}
    with Load(url, LOAD_BOUND, connections=CONNECTIONS) as load:
        time.sleep(BEFORE_KILL)
        killed_at = cluster.kill(victim)
        try:
            moments = recovery(api, victim_id, doomed, killed_at)
            time.sleep(AFTER)
            result = load.stop()
        finally:
            cluster.restore()  # the node starts again and rejoins, whatever happened
    deadline = time.monotonic() + BOUND
    while not any(
        n["id"] == victim_id and n["state"] == "ready"
        for n in listed(api, "/api/v1/nodes", "nodes")
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{victim} did not rejoin within {BOUND:.0f} s")
        time.sleep(1)
    return Run(victim, result, **moments)


def measure(runs: int) -> Results:
    results = Results()
    with bench_platform("stackyard-bench-loss-") as (platform, cluster, directory):
        repo = GitRepo.from_example("hello", directory / STACK)
        repo.write("stackyard.yml", STAGE.format(stage="dev", replicas=2, extra=""))
        repo.commit("the bench's stage")
        platform.cli("stacks", "create", STACK, "--repo", str(repo.path))
        platform.cli("build", STACK, timeout=300)
        platform.cli("release", STACK, "--stage", "dev")
        platform.cli("deploy", STACK, "--stage", "dev", timeout=300)
        url = stage_url(platform, STACK).rstrip("/") + "/"
        auth = {"Authorization": f"Bearer {platform.token}"}
        with httpx.Client(base_url=platform.api_url, timeout=30, headers=auth) as api:
            for _ in range(runs):
                wait_whole(api)
                results.runs.append(one_run(api, cluster, url))
    return results


def wait_whole(api: httpx.Client) -> None:
    """Until the stage has converged with its 2 tasks healthy (before a run)."""
    deadline = time.monotonic() + BOUND
    stage = f"/api/v1/stacks/{STACK}/stages/dev"
    while True:
        state = api.get(f"{stage}/check").json()
        tasks = listed(api, f"{stage}/tasks", "tasks")
        if state["converged"] and [t["health"] for t in tasks] == ["healthy", "healthy"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stage is not whole within {BOUND:.0f} s: {tasks}")
        time.sleep(1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: int, results: Results) -> str:
    lines = [
        "## A node killed under load (swarm)",
        "",
        "`bench/node_loss.py` on the three-node test swarm of `scripts/setup-host",
        "--swarm-nodes 3` (Swarm's default dispatcher heartbeat, 5 s): a stage of 2 replicas",
        f"on two nodes, `wrk -t2 -c{CONNECTIONS}` against its route, and the worker holding",
        "one task SIGKILLed (dockerd, containerd, shims and container processes at once),",
        f"{BEFORE_KILL:.0f} s into the load; the node restarted after each run. Seconds after",
        f"the SIGKILL ({runs} run(s); polled every {POLL} s through the API).",
        "",
        "| run | node | dead task not healthy (Stackyard's probes) | 2 healthy tasks again "
        "(Stackyard) | node `down` (Swarm) | `check` converged | requests | failed: connect "
        "/ timeout / read (cut off) / write / non-2xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, run in enumerate(results.runs, 1):
        w = run.wrk
        lines.append(
            f"| {n} | {run.victim} | {run.noticed:.1f} | {run.healthy:.1f} | {run.detected:.1f} "
            f"| {run.settled:.1f} | {w.requests:,} | {w.errors}: {w.connect} / {w.timeout} / "
            f"{w.read} / {w.write} / {w.non2xx} |"
        )
    rs = results.runs
    lines += [
        "",
        f"Medians: dead task noticed {median([r.noticed for r in rs]):.1f} s, the stage whole"
        f" again {median([r.healthy for r in rs]):.1f} s, Swarm's detection "
        f"{median([r.detected for r in rs]):.1f} s, `check` converged "
        f"{median([r.settled for r in rs]):.1f} s; failed requests "
        f"{sum(r.wrk.errors for r in rs)} of {sum(r.wrk.requests for r in rs):,}.",
        "",
        "Stackyard's recovery (probes fail, a replacement starts on a surviving node and",
        "passes its check) does not wait for Swarm's detection; the lost task stops being",
        "listed as running (`check` converged) about when Swarm's heartbeat marks the node down.",
        "",
        "The failures a kill can cause are responses in flight on the dead task: Caddy",
        "retries a request whose upstream refused it or closed before its response headers",
        "on the other upstream, but not one whose headers it has already relayed (a wrk",
        "*read* error). busybox httpd writes its headers (`write`) and its body (`sendfile`)",
        "in separate calls, so a SIGKILL between them cuts a response off; the window is",
        "short (about 0.15 ms per response, idle), so most runs see none (the CI run of",
        '2026-11-27 saw 3 of 36,475). See docs/engines.md, "Requests in flight".',
        "",
        f"Reproduce (as root): `.venv/bin/python -m bench.node_loss --runs {runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    bench_main("node_loss", __doc__, measure, report, runs=3)


if __name__ == "__main__":
    main()
