"""The cost of standing still: CPU and memory of a platform whose stages have nothing to do.

For each stage count N: a real platform on loopback (free ports, a temporary data dir,
stopped in the end), N stacks of ``examples/hello`` with its ``dev`` stage as written (one
replica, ``GET /healthz`` every 2 s), all deployed by one pipeline run each. Once every run
has SUCCEEDED and the platform has settled (``SETTLE`` s), nothing happens for ``IDLE`` s,
while the CPU time of the control plane (the ``stackyard up`` Python process, all its
threads) and of dockerd is read from ``/proc/<pid>/stat`` at both ends: CPU % of one core
= CPU seconds / wall seconds. The control plane's ``VmRSS`` is read at the end. dockerd's
CPU over the same length of time with no platform of ours running is the baseline (read
first, and again at the end). With ``--baseline-src`` the same is measured for an older
checkout's ``src`` (run by this venv's Python with ``PYTHONPATH``), in the same run, so the
two are compared on the same machine at the same time.
Usage:
    .venv/bin/python -m bench.idle_cost [--stages 10,50,100] [--baseline-src DIR]
        [--baseline-stages 10,40] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import RunningPlatform, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo

from bench.report import update_section
from stackyard.engines.base import LABEL_PLATFORM
from stackyard.engines.docker import DockerEngine

GOAL_CPU = 5.0  # % of one core, at 100 stages
GOAL_RSS_MB = 150.0
IDLE = float(os.environ.get("IDLE_SECONDS", "30"))  # seconds measured with nothing happening
SETTLE = 10.0  # after the last deployment: drains end, old tasks stop
PARALLEL_RUNS = 4  # pipeline runs under way at once while the stages are set up
RUN_TIMEOUT = 300.0
LISTS = 5  # full lists of the platform's tasks, timed on dockerd's side
KILLS = 3  # tasks killed, one after the other, to time self-healing
RESYNC = 30.0  # the task watch lists every task again this often
HEAL_TIMEOUT = 60.0
DOCKER = "/usr/bin/docker"
TICKS = os.sysconf("SC_CLK_TCK")
STACKYARD_YML = """\
# examples/hello's dev stage, as the example writes it
stages:
  - name: dev
    health:
      path: /healthz
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def dockerd_pid() -> int:
    pidfile = Path("/run/stackyard-dockerd.pid")
    if pidfile.exists():
        return int(pidfile.read_text().strip())
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True)
    return int(found.stdout.split()[0])


def cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU % of one core of each process over the next ``seconds``."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - started
    return {name: 100 * (cpu_seconds(pid) - before[name]) / wall for name, pid in pids.items()}


@dataclass
class Idle:
    code: str  # "this change" or "before"
    stages: int
    control_cpu: float  # % of one core
    dockerd_cpu: float
    caddy_cpu: float
    registry_cpu: float
    rss_mib: float
    threads: int
    setup_seconds: float
    dockerd_before: float  # dockerd % over the same time just before, with no platform
    list_cpu: float  # dockerd CPU seconds for one full list of the platform's tasks
    heal_seconds: list[float]  # from `docker kill` of a task to the stage answering again


@dataclass
class Results:
    runs: list[Idle] = field(default_factory=list)
    baseline_src: str = ""


def api(platform: RunningPlatform) -> httpx.Client:
    headers = {"Authorization": f"Bearer {platform.token}"}
    return httpx.Client(base_url=platform.api_url, headers=headers, timeout=60)


def deploy_stage(client: httpx.Client, repo: Path, name: str) -> None:
    """Create a stack and run its pipeline (build, release, deploy dev) to SUCCEEDED."""
    client.post("/api/v1/stacks", json={"name": name, "repo": str(repo)}).raise_for_status()
    run = client.post(f"/api/v1/stacks/{name}/runs", json={})
    run.raise_for_status()
    number = run.json()["number"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        record: dict[str, Any] = client.get(f"/api/v1/stacks/{name}/runs/{number}").json()
        if record["status"] == "SUCCEEDED":
            return
        if record["status"] in ("FAILED", "CANCELLED", "SUPERSEDED"):
            raise RuntimeError(f"{name}: run {number} ended {record['status']}: {record['error']}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: run {number} did not finish")
        time.sleep(0.5)


def measure_idle(code: str, stages: int, directory: Path, env: dict[str, str]) -> Idle:
    quiet = cpu_percent({"dockerd": dockerd_pid()}, IDLE)["dockerd"]
    print(f"dockerd with no platform, before {code} at {stages}: {quiet:.1f}%", flush=True)
    repo = GitRepo.from_example("hello", directory / "repo")
    repo.write("stackyard.yml", STACKYARD_YML)
    repo.commit("the dev stage only")
    platform = start_platform(directory / "data", extra_env=env)
    try:
        state = json.loads((platform.data_dir / "platform.json").read_text())
        started = time.monotonic()
        with api(platform) as client, ThreadPoolExecutor(PARALLEL_RUNS) as pool:
            names = [f"idle{n:03d}" for n in range(stages)]
            # The first run alone: a registry client that has not yet learnt how the
            # registry authenticates can refuse a concurrent first request (see the report).
            for name in names[:1]:
                deploy_stage(client, repo.path, name)
            list(pool.map(lambda name: deploy_stage(client, repo.path, name), names[1:]))
        setup = time.monotonic() - started
        print(f"{code}, {stages} stages deployed in {setup:.0f} s; settling", flush=True)
        time.sleep(SETTLE)
        pids = {
            "control": int(state["pid"]),
            "dockerd": dockerd_pid(),
            # An earlier version has one Caddy ("caddy"); this one two ("caddy-1", "caddy-2").
            "caddy": int(state["children"].get("caddy") or state["children"]["caddy-1"]),
            "registry": int(state["children"]["registry"]),
        }
        cpu = cpu_percent(pids, IDLE)
        list_cpu = dockerd_list_cost(pids["dockerd"], (platform.data_dir / "platform-id"))
        with api(platform) as client:
            heal = [self_heal(client, names[0]) for _ in range(KILLS)] if names else []
        idle = Idle(
            code=code,
            stages=stages,
            control_cpu=cpu["control"],
            dockerd_cpu=cpu["dockerd"],
            caddy_cpu=cpu["caddy"],
            registry_cpu=cpu["registry"],
            rss_mib=rss_mib(pids["control"]),
            threads=threads(pids["control"]),
            setup_seconds=setup,
            dockerd_before=quiet,
            list_cpu=list_cpu,
            heal_seconds=heal,
        )
        print(
            f"{code}, {stages} stages idle: control plane {idle.control_cpu:.1f}% of a core, "
            f"dockerd {idle.dockerd_cpu:.1f}%, RSS {idle.rss_mib:.0f} MiB, "
            f"{idle.threads} threads",
            flush=True,
        )
        return idle
    finally:
        stop_platform(platform)


def self_heal(client: httpx.Client, stack: str) -> float:
    """Kill the stage's task (as a crash would) and time until the stage answers again
    (one replica: from the kill to the first 200 of the stage URL, served by a new task)."""
    stage = f"/api/v1/stacks/{stack}/stages/dev"
    url = client.get(f"{stage}/url").json()["url"]
    (task,) = [t for t in client.get(f"{stage}/tasks").json()["tasks"] if t["state"] == "running"]
    subprocess.run([DOCKER, "kill", task["id"]], capture_output=True, check=True, timeout=60)
    killed = time.monotonic()
    with httpx.Client(timeout=1) as web:
        while time.monotonic() - killed < HEAL_TIMEOUT:
            try:
                if web.get(url + "/").status_code == 200:
                    healed = time.monotonic() - killed
                    break
            except httpx.HTTPError:
                pass  # refused or reset while no task serves: that is the gap being timed
            time.sleep(0.01)
        else:
            raise RuntimeError(f"{stack}: no answer within {HEAL_TIMEOUT:.0f} s of the kill")
    time.sleep(2)  # the dead task is removed, the stage settles
    return healed


def dockerd_list_cost(dockerd: int, id_file: Path) -> float:
    """dockerd's CPU seconds for one list of the platform's tasks (what a re-list costs)."""
    engine = DockerEngine()
    labels = {LABEL_PLATFORM: id_file.read_text().strip()}
    try:
        engine.list(labels)  # the connection is made
        before = cpu_seconds(dockerd)
        for _ in range(LISTS):
            engine.list(labels)
        return (cpu_seconds(dockerd) - before) / LISTS  # the mean: CPU time only adds up
    finally:
        engine.close()


def code_env(src: str) -> dict[str, str]:
    """The environment that makes ``python -m stackyard`` run the code in ``src``."""
    if not src:
        return {}
    env = {"PYTHONPATH": str(Path(src).resolve())}
    probe = subprocess.run(
        [sys.executable, "-c", "import stackyard; print(stackyard.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    if not probe.stdout.strip().startswith(str(Path(src).resolve())):
        raise RuntimeError(f"PYTHONPATH={src} does not run that checkout: {probe.stdout}")
    return env


def measure(stages: list[int], baseline_src: str, baseline_stages: list[int]) -> Results:
    results = Results(baseline_src=baseline_src)
    plan: list[tuple[str, int, dict[str, str]]] = [("this change", n, {}) for n in stages]
    if baseline_src:
        old = code_env(baseline_src)
        plan += [("before", n, old) for n in baseline_stages]
    plan.sort(key=lambda item: (item[1], item[0]))  # each count side by side, in one run
    for code, count, env in plan:
        with tempfile.TemporaryDirectory(prefix="stackyard-bench-idle-") as tmp:
            results.runs.append(measure_idle(code, count, Path(tmp), env))
    return results


def report(results: Results) -> str:
    lines = [
        "## The cost of standing still",
        "",
        f"Goals: with 100 stages deployed and idle, the control plane under {GOAL_CPU:.0f}% of "
        f"one core and under {GOAL_RSS_MB:.0f} MB resident, and dockerd no busier than with "
        "no platform running, beyond what the health probes cost. Each row is a real "
        "platform on loopback with N stacks of `examples/hello`, its `dev` stage as written "
        "(one replica, `GET /healthz` every 2 s), each deployed by a pipeline run; then "
        f"{SETTLE:.0f} s to settle and {IDLE:.0f} s of nothing, over which the CPU time of the "
        "control plane (the `stackyard up` process, all threads) and of dockerd is read from "
        "`/proc/<pid>/stat`. dockerd's baseline is its CPU over the same length of time just "
        "before the platform starts, with no platform of this benchmark running. RSS and "
        "threads are read at the end. Caddy and the registry are shown for information. "
        f"Self-healing: after the idle window, one stage's task is killed (`docker kill`, "
        f"{KILLS} times in a row) and the time from the kill to the stage URL answering 200 "
        "again (from a new task; one replica) is taken.",
        "",
        "| code | stages | control plane CPU, % of one core | dockerd CPU % | "
        "dockerd baseline % | dockerd ms per full list | control plane RSS MiB | threads | "
        "self-healing s (median, max) | Caddy CPU % | registry CPU % | setup s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results.runs:
        lines.append(
            f"| {run.code} | {run.stages} | {run.control_cpu:.1f} | {run.dockerd_cpu:.1f} | "
            f"{run.dockerd_before:.1f} | {run.list_cpu * 1000:.0f} | {run.rss_mib:.0f} | "
            f"{run.threads} | {healing(run.heal_seconds)} | {run.caddy_cpu:.1f} | "
            f"{run.registry_cpu:.1f} | {run.setup_seconds:.0f} |"
        )
    ours = [r for r in results.runs if r.code == "this change"]
    top = max(ours, key=lambda r: r.stages) if ours else None
    lines += [
        "",
        "The machine is shared: other work on the same Docker engine shows up in both dockerd "
        "columns, which are therefore noisy. The platform's own share of dockerd is read "
        "apart: `dockerd ms per full list` is dockerd's CPU for one list of all the "
        f"platform's tasks (a container list and an inspect per task, the mean of {LISTS}), "
        f"which this change does once every {RESYNC:.0f} s and otherwise asks dockerd nothing "
        "while idle (the event stream is one idle connection; health probes go to the tasks, "
        "not to dockerd). The code before listed each stage's tasks every second, from every "
        "stage.",
    ]
    if top is not None:
        lines += [
            "",
            f"At {top.stages} stages that is {100 * top.list_cpu / RESYNC:.2f}% of one core of "
            "dockerd, on top of what it does with no platform running.",
        ]
        meets = top.control_cpu < GOAL_CPU and top.rss_mib * 2**20 < GOAL_RSS_MB * 1e6
        lines += [
            "",
            f"At {top.stages} stages the control plane used **{top.control_cpu:.1f}%** of one "
            f"core and **{top.rss_mib:.0f} MiB**: this {'meets' if meets else 'misses'} the "
            f"goals of {GOAL_CPU:.0f}% and {GOAL_RSS_MB:.0f} MB.",
        ]
    lines += [
        "",
        "Where an idle stage's cost went, before: its loop listed the engine (one container "
        "list and an inspect per task) and asked the router every second, and every loop had "
        "its own HTTP client and probe threads. Now one task watch lists the engine once and "
        "then follows its event stream (a full list every 30 s as a safety net), one "
        "scheduler runs every health probe at its own interval, and a settled stage sleeps "
        "until its tasks or their health change (one safety step every 5 minutes). What is "
        "left grows with the stages: the health probes (one `GET /healthz` per task every "
        "2 s, all from one thread, without blocking), the re-lists and those rare steps. "
        "Threads: one per stage loop (blocked: no CPU) and one build worker per stack that "
        "has built.",
    ]
    if results.baseline_src:
        lines += [
            "",
            "`before` is the code this change started from, run from its own `src` by the same "
            "Python and dependencies (`PYTHONPATH`), in the same benchmark run.",
        ]
    lines += [
        "",
        "Reproduce: `.venv/bin/python -m bench.idle_cost --stages "
        + ",".join(str(r.stages) for r in ours)
        + (" --baseline-src <checkout>/src --baseline-stages " if results.baseline_src else "")
        + ",".join(str(r.stages) for r in results.runs if r.code == "before")
        + "`",
    ]
    return "\n".join(lines)


def healing(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    return f"{statistics.median(seconds):.2f}, {max(seconds):.2f}"


def counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", type=counts, default=[10, 50, 100])
    parser.add_argument("--baseline-src", default="", help="an older checkout's src directory")
    parser.add_argument("--baseline-stages", type=counts, default=[10, 40])
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    body = report(measure(args.stages, args.baseline_src, args.baseline_stages))
    print(body)
    if not args.no_write:
        update_section("idle_cost", body)


if __name__ == "__main__":
    main()
