"""`stackyard up -d` time to ready (API, registry and both Caddies all answering).

Side by side in one run against the floor: the registry and Caddy binaries alone, started
in parallel from the same configs and polled until they answer. Also the control plane
alone: `up -d` again after `down`, adopting the data plane that kept running. Usage:
    .venv/bin/python -m bench.up_time [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.report import update_section
from stackyard.platform.components import plan_components
from stackyard.platform.supervisor import spawn, stop, wait_ready
from stackyard.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_in(directory: Path) -> Settings:
    return Settings(data_dir=directory, api_port=free_port(), registry_port=free_port())


def time_components_alone(directory: Path) -> float:
    settings = settings_in(directory)
    directory.mkdir(mode=0o700, parents=True)
    specs = plan_components(settings)  # credentials and configs made before the clock starts
    started = time.perf_counter()
    running = [spawn(spec) for spec in specs]
    with ThreadPoolExecutor(max_workers=len(running)) as pool:
        list(pool.map(lambda kept: wait_ready(kept, 30), running))
    elapsed = time.perf_counter() - started
    for kept in running:
        stop(kept)
    return elapsed


def time_stackyard_up(directory: Path) -> tuple[float, float]:
    """`up -d` from nothing, then again after `down` (the data plane kept running)."""
    settings = settings_in(directory)
    env = {**os.environ, "STACKYARD_DATA_DIR": str(directory)}
    argv = [sys.executable, "-m", "stackyard", "up", "-d", "--json", "--api-port",
            str(settings.api_port), "--registry-port", str(settings.registry_port)]  # fmt: skip
    down = [sys.executable, "-m", "stackyard", "down"]
    try:
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
        cold = time.perf_counter() - started
        subprocess.run(down, env=env, check=True, capture_output=True, timeout=60)
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
        adopting = time.perf_counter() - started
    finally:
        subprocess.run([*down, "--all"], env=env, check=True, capture_output=True, timeout=90)
    return cold, adopting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    floor, ours, again = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):  # interleaved, so drift hits both alike
            floor.append(time_components_alone(Path(tmp) / f"floor-{run}"))
            cold, adopting = time_stackyard_up(Path(tmp) / f"up-{run}")
            ours.append(cold)
            again.append(adopting)
    f_med, o_med, a_med = (
        statistics.median(floor),
        statistics.median(ours),
        statistics.median(again),
    )
    rows = [
        "| what | median s | min s | max s |",
        "|---|---|---|---|",
        f"| registry + 2 Caddies alone (floor) | {f_med:.2f} | {min(floor):.2f} | "
        f"{max(floor):.2f} |",
        f"| `stackyard up -d` to ready | {o_med:.2f} | {min(ours):.2f} | {max(ours):.2f} |",
        f"| `up -d` after `down` (the data plane kept running) | {a_med:.2f} | {min(again):.2f} | "
        f"{max(again):.2f} |",
    ]
    body = (
        "## `stackyard up` time to ready\n\n"
        f"Goal: under 3 s. {args.runs} runs, interleaved. `up -d` includes starting Python, "
        "applying migrations, the data plane's keeper (a second Python) with the registry and "
        "both Caddies, and the API, and waiting until all answer.\n\n"
        + "\n".join(rows)
        + f"\n\nOverhead over the floor: {o_med - f_med:+.2f} s (ratio {o_med / f_med:.2f}).\n\n"
        "Reproduce: `.venv/bin/python -m bench.up_time --runs 5`"
    )
    print(body)
    if not args.no_write:
        update_section("up_time", body)


if __name__ == "__main__":
    main()
