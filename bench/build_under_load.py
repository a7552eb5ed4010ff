"""A heavy build must not starve production: a prod stage under wrk, with and without one.

A real platform on loopback serves a prod stage of ``examples/hello`` (2 tasks behind
Caddy). The same bounded wrk load (``wrk -t2 -c16 -d20s --latency``) runs against it
three times: alone, while another stack's build.yml burns CPU and memory in its build
container (four busy loops and a 1.5 GiB allocation for 20 s, started 2 s before the
load), and alone again; then it builds and pushes its image. Reported: requests, failed
requests and the latency percentiles.
Usage:
    .venv/bin/python -m bench.build_under_load [--runs 2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.conftest import RunningPlatform, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo

from bench.report import update_section

GOAL = 1.5
SECONDS = 20
CONNECTIONS = 16
STACKYARD_YML = """\
stages:
  - name: prod
    replicas: 2
    health: {path: /healthz, interval: 0.5, start_period: 2}
"""
HEAVY_BUILD = """\
version: 0.2
phases:
  build:
    commands:
      - |
        for i in 1 2 3 4; do timeout 20 sh -c 'while :; do :; done' & done
        timeout 20 sh -c 'head -c 1536M /dev/zero | tail > /dev/null' &
        wait
        echo "burned"
      - docker build --network host -t $IMAGE_URL:latest .
      - docker push $IMAGE_URL:latest
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Load:
    requests: int
    failed: int
    percentiles: dict[str, float] = field(default_factory=dict)  # "50%" -> ms


def wrk(url: str) -> Load:
    argv = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "5s", "--latency", url]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 60).stdout
    found = re.search(r"(\d+) requests in", text)
    if found is None:
        raise RuntimeError(f"wrk printed no request count:\n{text}")
    failed = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    percentiles = {
        m[1]: float(m[2]) * UNITS[m[3]]
        for m in re.finditer(r"^\s+(\d+%)\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    }
    return Load(int(found[1]), failed + (int(non2xx[1]) if non2xx else 0), percentiles)


def prepare(platform: RunningPlatform, directory: Path) -> str:
    shop = GitRepo.from_example("hello", directory / "shop")
    shop.write("stackyard.yml", STACKYARD_YML)
    shop.commit("one prod stage of two tasks")
    platform.cli("stacks", "create", "shop", "--repo", str(shop.path))
    platform.cli("build", "shop", timeout=300)
    platform.cli("release", "shop", "--stage", "prod")
    platform.cli("deploy", "shop", "--stage", "prod", timeout=300)
    heavy = GitRepo.from_example("hello", directory / "heavy")
    heavy.write("build.yml", HEAVY_BUILD)
    heavy.commit("a heavy build")
    platform.cli("stacks", "create", "heavy", "--repo", str(heavy.path))
    url: str = json.loads(platform.cli("url", "shop", "--stage", "prod", "--json").stdout)["url"]
    return url


def heavy_build(platform: RunningPlatform, outcome: dict[str, Any]) -> None:
    result = platform.cli("build", "heavy", "--json", check=False, timeout=600)
    record = json.loads(result.stdout)
    outcome["status"] = record["status"]
    outcome["burned"] = "burned" in Path(record["log_path"]).read_text()


def measure(runs: int) -> tuple[list[Load], list[Load], list[dict[str, Any]]]:
    quiet: list[Load] = []
    loaded: list[Load] = []
    builds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-") as tmp:
        platform = start_platform(Path(tmp) / "data")
        try:
            url = prepare(platform, Path(tmp))
            wrk(url)  # warm-up
            for _ in range(runs):
                quiet.append(wrk(url))
                outcome: dict[str, Any] = {}
                building = threading.Thread(target=heavy_build, args=(platform, outcome))
                building.start()
                time.sleep(2)  # the build container is up and burning
                loaded.append(wrk(url))
                building.join(timeout=600)
                builds.append(outcome)
            quiet.append(wrk(url))
        finally:
            stop_platform(platform)
            subprocess.run(
                ["docker", "rmi", "-f", f"{platform.registry}/shop:latest"],
                capture_output=True, timeout=120,
            )  # fmt: skip
    return quiet, loaded, builds


def row(name: str, loads: list[Load]) -> str:
    keys = ("50%", "90%", "99%")
    cells = " | ".join(
        f"{statistics.median(load.percentiles[k] for load in loads):.2f}" for k in keys
    )
    requests = statistics.median(load.requests for load in loads)
    failed = sum(load.failed for load in loads)
    return f"| {name} | {len(loads)} | {requests:.0f} | {failed} | {cells} |"


def report(runs: int, quiet: list[Load], loaded: list[Load], builds: list[dict[str, Any]]) -> str:
    p99_quiet = statistics.median(load.percentiles["99%"] for load in quiet)
    p99_loaded = statistics.median(load.percentiles["99%"] for load in loaded)
    ratio = p99_loaded / p99_quiet
    failed = sum(load.failed for load in loaded)
    meets = ratio <= GOAL and failed == 0
    burned = all(b.get("burned") for b in builds)
    statuses = ", ".join(b.get("status", "?") for b in builds)
    lines = [
        "## A heavy build next to production",
        "",
        f"Goal: while another stack's build burns CPU and memory, a prod stage fails no "
        f"request and its p99 latency stays within {GOAL:.1f}x of the same load without the "
        "build. A real platform on loopback (default build limits: all cores but half of "
        "one, 4 GiB, 2048 processes, cpu shares 128 against the tasks' 1024) serves "
        f"`examples/hello` as a prod stage of 2 tasks behind Caddy; `wrk -t2 -c{CONNECTIONS} "
        f"-d{SECONDS}s --latency` against its URL, {runs} runs with the build and "
        f"{len(quiet)} without, alternating. The build: four busy loops and a 1.5 GiB "
        "allocation (`head -c 1536M /dev/zero | tail`) for 20 s in its build container, "
        "started 2 s before the load.",
        "",
        "| load | runs | requests (median) | failed requests (all runs) | p50 ms | p90 ms "
        "| p99 ms |",
        "|---|---|---|---|---|---|---|",
        row("prod stage alone", quiet),
        row("prod stage, heavy build running", loaded),
        "",
        f"p99 with the build / without: **{ratio:.2f}**, {failed} failed requests; this "
        f"{'meets' if meets else 'misses'} the goal. The build ran to its end each time: "
        f"{'yes' if burned else 'no'} (statuses: {statuses}).",
        "The machine has 2 cores, shared with wrk, Caddy and the platform, and with other "
        "tenants: the build's hard cap (1.5 cores) leaves half a core, and its low weight "
        "hands the tasks the CPU whenever they want it.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.build_under_load --runs {runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    quiet, loaded, builds = measure(args.runs)
    body = report(args.runs, quiet, loaded, builds)
    print(body)
    if not args.no_write:
        update_section("build_under_load", body)


if __name__ == "__main__":
    main()
