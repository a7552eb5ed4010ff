"""What the build proxy's before/after benches share (``bench.base_pull``,
``bench.buildkit_session``): each run builds through a proxy of one checkout (this one, or
``--before DIR``) started in a child process whose ``PYTHONPATH`` is that checkout's
``src``, so both proxies run in one invocation; the runs alternate between the sides, the
side going first alternating."""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

DOCKER = "/usr/bin/docker"


@contextmanager
def proxy_host(nest_builds_in: str | None = None) -> Iterator[str]:
    """In the child: one build's socket of a new build proxy (of the checkout on the
    child's path), as a ``DOCKER_HOST`` value; closed after."""
    from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
    from stackyard.images.dockerproxy.server import BuildProxy

    proxy = BuildProxy()
    scope = BuildScope(f"bench{secrets.token_hex(3)}", "127.0.0.1:1", None, BuildLimits(pids=256))
    socket = proxy.open(scope)
    if nest_builds_in is not None:
        socket.nest_builds_in(nest_builds_in)
    try:
        yield f"unix://{socket.path}"
    finally:
        socket.close()
        proxy.close()


def child_seconds(module: str, source: Path, *args: str) -> float:
    """Run ``python -m module --child ARGS`` with ``source``'s proxy; the seconds it
    printed last."""
    env = {**os.environ, "PYTHONPATH": f"{source / 'src'}:{Path.cwd()}"}
    done = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        env=env, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def interleaved(
    sides: Mapping[str, Path], runs: int, measure: Callable[[Path], float]
) -> dict[str, list[float]]:
    """``runs`` measurements of each side's checkout, alternating (printed as they come)."""
    times: dict[str, list[float]] = {side: [] for side in sides}
    for run in range(runs):
        order = list(sides) if run % 2 == 0 else list(reversed(list(sides)))
        for side in order:
            times[side].append(measure(sides[side]))
            print(side, f"{times[side][-1]:.3f}", flush=True)
    return times


def median_row(label: str, times: list[float]) -> str:
    """A table row: the label, the median and every run, in seconds."""
    runs = ", ".join(f"{t:.2f}" for t in times)
    return f"| {label} | {statistics.median(times):.2f} s | {runs} |\n"
