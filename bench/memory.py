"""Control-plane resident memory: idle after start, and during pipeline runs.

Starts a real platform on loopback (free ports, temporary data dir, stopped in the end) and
reads ``VmRSS`` from ``/proc/<pid>/status`` of the control plane, the ``stackyard up`` Python
process whose pid is in ``<data dir>/platform.json``, every 100 ms: first while idle after
start, then during ``--runs`` pipeline runs of a 3-stage stack (``examples/hello``; dev and
staging deploy automatically, prod waits for an approval, which is given) and finally idle
again. The registry and Caddy (the platform's children, from the same file) and any other
process started by the control plane (git, docker CLI, build shells) are sampled too, for
information; the goal is about the control plane alone. The kernel's own high-water mark
(``VmHWM``) is read at the end as a cross-check of the sampled peak.
Usage:
    .venv/bin/python -m bench.memory [--runs 3] [--no-write]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import RunningPlatform, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo

from bench.report import bench_main

GOAL_MB = 150.0
DOCKER = "/usr/bin/docker"
STACK = "mem"
INTERVAL = 0.1
IDLE_SECONDS = 5.0
RUN_TIMEOUT = 300.0
STAGES = """\
stages:
  - name: dev
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
  - name: staging
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
  - name: prod
    promotion: approval
    replicas: 2
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
"""


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (by parent pid), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


@dataclass
class Sample:
    at: float
    phase: str
    control: int  # KiB
    children: dict[str, int]  # KiB per named child (registry, caddy)
    others: int  # KiB, sum of every other descendant of the control plane


class Sampler:
    """Sample the RSS of the control plane and its children every INTERVAL, in a thread."""

    def __init__(self, pid: int, children: dict[str, int]) -> None:
        self.pid = pid
        self.children = children
        self.phase = "idle after start"
        self.samples: list[Sample] = []
        self.most_others = 0  # most other descendants seen at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        named = set(self.children.values())
        own = cmdline(self.pid)  # a child forked but not yet exec'd shares the parent's pages
        while not self._stop.is_set():
            at = time.perf_counter()
            control = status_kib(self.pid, "VmRSS")
            kids = {name: status_kib(pid, "VmRSS") for name, pid in self.children.items()}
            others = [
                pid
                for pid in descendants(self.pid)
                if pid not in named and cmdline(pid) not in (b"", own)
            ]
            self.most_others = max(self.most_others, len(others))
            total = sum(status_kib(pid, "VmRSS") for pid in others)
            self.samples.append(Sample(at, self.phase, control, kids, total))
            self._stop.wait(max(0.0, INTERVAL - (time.perf_counter() - at)))

    def of(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    hwm_kib: int = 0
    run_seconds: list[float] = field(default_factory=list)
    most_others: int = 0
    runs: int = 0
    imports: dict[str, int] = field(default_factory=dict)


def api_get(platform: RunningPlatform, path: str) -> Any:
    headers = {"Authorization": f"Bearer {platform.token}"}
    response = httpx.get(platform.api_url + path, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()


def pipeline(platform: RunningPlatform, repo: GitRepo, version: str) -> None:
    """One run: deploy (to the prod gate), approve prod, wait until it SUCCEEDED."""
    repo.set_version(version)
    run = json.loads(platform.cli("deploy", STACK, "--json", timeout=RUN_TIMEOUT).stdout)
    if run["status"] != "WAITING":
        raise RuntimeError(f"run {run['number']} is {run['status']}, not WAITING: {run['error']}")
    platform.cli("approve", STACK, "--stage", "prod")
    deadline = time.monotonic() + RUN_TIMEOUT
    record = api_get(platform, f"/api/v1/stacks/{STACK}/runs/{run['number']}")
    while record["status"] not in ("SUCCEEDED", "FAILED", "CANCELLED", "SUPERSEDED"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run['number']} did not finish")
        time.sleep(0.2)
        record = api_get(platform, f"/api/v1/stacks/{STACK}/runs/{run['number']}")
    if record["status"] != "SUCCEEDED":
        raise RuntimeError(f"run {run['number']} ended {record['status']}: {record['error']}")


def remove_platform_images(registry: str) -> None:
    """The tasks' images stay in the engine; removed by reference, never by image id."""
    listed = subprocess.run([DOCKER, "images", "--digests", "--format",
                             "{{.Repository}}@{{.Digest}}", f"{registry}/{STACK}"],
                            capture_output=True, text=True, timeout=60).stdout.split()  # fmt: skip
    found = sorted({ref for ref in listed if not ref.endswith("@<none>")})
    if found:
        subprocess.run([DOCKER, "rmi", *found], capture_output=True, timeout=120)


IMPORT_PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
"""
IMPORTS = {
    "bare interpreter": [],
    "`import sqlalchemy, alembic`": ["sqlalchemy", "alembic"],
    "`import fastapi, uvicorn`": ["fastapi", "uvicorn"],
    "`import docker`": ["docker"],
    "`import stackyard.api.app` (everything the server imports)": ["stackyard.api.app"],
}


def import_footprint() -> dict[str, int]:
    """RSS (KiB) of a fresh interpreter after importing only these modules: the floor."""
    footprint: dict[str, int] = {}
    for label, modules in IMPORTS.items():
        argv = [sys.executable, "-c", IMPORT_PROBE, *modules]
        result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
        footprint[label] = int(result.stdout.split()[-1])
    return footprint


def measure(runs: int) -> Results:
    results = Results(runs=runs)
    results.imports = import_footprint()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-mem-") as tmp:
        directory = Path(tmp)
        platform = start_platform(directory / "data")
        try:
            state = json.loads((platform.data_dir / "platform.json").read_text())
            with Sampler(state["pid"], state["children"]) as sampler:
                time.sleep(IDLE_SECONDS)
                repo = GitRepo.from_example("hello", directory / "repo")
                repo.write("stackyard.yml", STAGES)
                repo.commit("three stages, prod behind an approval")
                platform.cli("stacks", "create", STACK, "--repo", str(repo.path))
                for i in range(runs):
                    sampler.phase = f"pipeline run {i + 1}"
                    started = time.perf_counter()
                    pipeline(platform, repo, f"mem-{i + 1}")
                    results.run_seconds.append(time.perf_counter() - started)
                    print(f"run {i + 1}: {results.run_seconds[-1]:.1f} s, control plane peak "
                          f"{max(s.control for s in sampler.of(sampler.phase)) / 1024:.1f} MiB",
                          flush=True)  # fmt: skip
                sampler.phase = "idle after the runs"
                time.sleep(IDLE_SECONDS)
            results.hwm_kib = status_kib(state["pid"], "VmHWM")
            results.samples = sampler.samples
            results.most_others = sampler.most_others
        finally:
            stop_platform(platform)
            remove_platform_images(platform.registry)
    return results


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def report(results: Results) -> str:
    phases: list[str] = []
    for sample in results.samples:
        if sample.phase not in phases:
            phases.append(sample.phase)
    idle = [s.control for s in results.samples if s.phase == "idle after start"]
    busy = [s.control for s in results.samples if s.phase.startswith("pipeline")]
    peak = max(busy)
    worst = max(max(s.control for s in results.samples), results.hwm_kib)
    verdict = "meets" if worst * 1024 < GOAL_MB * 1e6 else "misses"
    names = list(results.samples[0].children)
    lines = [
        "## Control-plane memory",
        "",
        f"Goal: the control plane (the `stackyard up` Python process: API, SQLite, pipeline, "
        f"deployment controller) under {GOAL_MB:.0f} MB resident, idle and during a pipeline. "
        "A real platform on loopback; `VmRSS` of its pid (from `platform.json`) is read from "
        f"`/proc/<pid>/status` every {INTERVAL * 1000:.0f} ms: {IDLE_SECONDS:.0f} s idle right "
        f"after `stackyard up -d`, then {results.runs} pipeline run(s) of a 3-stage stack "
        "(`examples/hello`, a new commit each; `stackyard deploy` builds and deploys dev and "
        "staging, prod waits for an approval, `stackyard approve` lets it deploy 2 replicas), "
        f"then {IDLE_SECONDS:.0f} s idle again. The registry and Caddy are the platform's "
        "children, and everything else the control plane starts (git, docker CLI) is summed "
        'as "other" (leaving out a child forked but not yet exec\'d, which still shares the '
        "control plane's pages); both are for information, outside the goal.",
        "",
        "| phase | samples | control plane median MiB | control plane peak MiB | "
        + " | ".join(f"{n} peak MiB" for n in names)
        + " | other children peak MiB |",
        "|---|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for phase in phases:
        rows = [s for s in results.samples if s.phase == phase]
        control = [s.control for s in rows]
        cells = " | ".join(mib(max(s.children[n] for s in rows)) for n in names)
        lines.append(
            f"| {phase} | {len(rows)} | {mib(statistics.median(control))} | "
            f"{mib(max(control))} | {cells} | {mib(max(s.others for s in rows))} |"
        )
    lines += [
        "",
        f"Control plane: idle **{mib(statistics.median(idle))} MiB**, peak during the "
        f"pipeline **{mib(peak)} MiB**; the kernel's high-water mark (`VmHWM`) at the end is "
        f"{mib(results.hwm_kib)} MiB. This {verdict} the goal of {GOAL_MB:.0f} MB "
        f"({GOAL_MB * 1e6 / 2**20:.0f} MiB). Pipeline runs took "
        + ", ".join(f"{s:.1f}" for s in results.run_seconds)
        + f" s; at most {results.most_others} other process(es) ran under the control plane "
        "at one time.",
        "",
        "Most of the idle figure is imported code: a fresh interpreter (the same venv) that "
        "only imports these modules holds:",
        "",
        "| fresh interpreter after | RSS MiB |",
        "|---|---|",
        *(f"| {label} | {mib(kib)} |" for label, kib in results.imports.items()),
        "",
        f"Reproduce: `.venv/bin/python -m bench.memory --runs {results.runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    bench_main("memory", __doc__, measure, lambda _runs, results: report(results), runs=3)


if __name__ == "__main__":
    main()
