"""What the proxy's own pull of a missing base image costs: a legacy ``docker build`` through
one build's proxy socket FROM an image the engine does not hold (a 5 MiB layer of its own
on busybox, in a local registry the build is logged in to), with this checkout's proxy
(it pulls the base itself and judges its ONBUILD triggers before the build goes on)
against another checkout's (``--before DIR``: the engine pulls it during the build). The
base is removed from the engine before each run; runs alternate between the two sides,
the side going first alternating. The proxy runs in a child process per run (not timed);
the clock spans ``docker build`` alone.
Usage:
    .venv/bin/python -m bench.base_pull --before /tmp/main [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import update_section

DOCKER = "/usr/bin/docker"


def one_build(context: Path, config: Path) -> float:
    """In the child: open a proxy socket, build ``context`` through it (legacy builder)."""
    from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
    from stackyard.images.dockerproxy.server import BuildProxy

    proxy = BuildProxy()
    scope = BuildScope(f"bench{secrets.token_hex(3)}", "127.0.0.1:1", None, BuildLimits(pids=256))
    socket = proxy.open(scope)
    env = {"PATH": os.environ["PATH"], "DOCKER_HOST": f"unix://{socket.path}",
           "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(config)}  # fmt: skip
    try:
        started = time.perf_counter()
        done = subprocess.run(
            [DOCKER, "build", "--network", "host", "--no-cache", "-q", str(context)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    finally:
        socket.close()
        proxy.close()
    if done.returncode != 0:
        raise RuntimeError(f"the build failed: {done.stderr[-2000:]}")
    subprocess.run([DOCKER, "rmi", done.stdout.strip()], capture_output=True, timeout=120)
    return elapsed


def run_side(source: Path, context: Path, config: Path, base: str) -> float:
    subprocess.run([DOCKER, "rmi", base], capture_output=True, timeout=120)  # not held
    env = {**os.environ, "PYTHONPATH": f"{source / 'src'}:{Path.cwd()}"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.base_pull", "--child", str(context), str(config)],
        env=env, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", type=Path, nargs=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child is not None:
        print(f"{one_build(*args.child):.4f}")
        return
    from tests.integration.registry_fixtures import running_registry

    sides = {"after": Path.cwd(), "before": args.before}
    times: dict[str, list[float]] = {side: [] for side in sides}
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="stackyard-bench-pull-") as tmp,
        running_registry(Path(tmp)) as registry,
    ):
        base = f"{registry.endpoint}/bases/bench:v1"
        made = Path(tmp) / "base"
        made.mkdir()
        (made / "Dockerfile").write_text(
            "FROM busybox:latest\nRUN head -c 5242880 /dev/urandom > /blob\nONBUILD RUN true\n"
        )
        registry.docker("build", "--network", "host", "-q", "-t", base, str(made))
        registry.docker("push", base)
        context = Path(tmp) / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
        try:
            for run in range(args.runs):
                order = list(sides) if run % 2 == 0 else list(reversed(sides))
                for side in order:
                    taken = run_side(sides[side], context, registry.docker_config, base)
                    times[side].append(taken)
                    print(side, f"{taken:.3f}", flush=True)
        finally:
            subprocess.run([DOCKER, "rmi", base], capture_output=True, timeout=120)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    load_after = os.getloadavg()[0]
    body = (
        "## A build from a base image the engine lacks: the proxy's own pull\n\n"
        "A legacy `docker build --no-cache` through one build's proxy socket, `FROM` a base "
        "image the engine does not hold (busybox plus a 5 MiB layer of its own and an "
        "ONBUILD trigger, in a local registry the build is logged in to; removed from the "
        "engine before each run): the proxy pulling the base itself with the build's "
        "login and judging its triggers before the build goes on (after) against the "
        f"engine pulling it during the build (before). {args.runs} runs each, "
        f"interleaved; load average (1 min) {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end.\n\n"
        "| proxy | median | runs |\n| --- | --- | --- |\n"
        f"| the engine pulls (before) | {before:.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in times['before'])} |\n"
        f"| the proxy pulls, then judges (after) | {after:.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in times['after'])} |\n\n"
        f"Difference after - before: **{after - before:+.2f} s** "
        f"({after / before:.2f}x).\n\n"
        "Reproduce: `git archive <commit before the change> src | tar -x -C /tmp/before`, "
        "then `.venv/bin/python -m bench.base_pull --before /tmp/before --runs 5`"
    )
    print(body)
    if not args.no_write:
        update_section("base_pull", body)


if __name__ == "__main__":
    main()
