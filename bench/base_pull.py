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
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.proxy_sides import DOCKER, child_seconds, interleaved, median_row, proxy_host
from bench.report import update_section


def one_build(context: Path, config: Path) -> float:
    """In the child: build ``context`` through a proxy socket (legacy builder)."""
    with proxy_host() as host:
        env = {"PATH": os.environ["PATH"], "DOCKER_HOST": host,
               "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(config)}  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(
            [DOCKER, "build", "--network", "host", "--no-cache", "-q", str(context)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the build failed: {done.stderr[-2000:]}")
    subprocess.run([DOCKER, "rmi", done.stdout.strip()], capture_output=True, timeout=120)
    return elapsed


def run_side(source: Path, context: Path, config: Path, base: str) -> float:
    subprocess.run([DOCKER, "rmi", base], capture_output=True, timeout=120)  # not held
    return child_seconds("bench.base_pull", source, str(context), str(config))


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
            times = interleaved(
                sides, args.runs, lambda side: run_side(side, context, registry.docker_config, base)
            )
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
        + median_row("the engine pulls (before)", times["before"])
        + median_row("the proxy pulls, then judges (after)", times["after"])
        + "\n"
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
