"""Backup and restore time of a platform with 3 stacks, and its start after a restore.

Starts a real platform on loopback with the stacks of the backup and restore test (3
stacks of `examples/hello`, 4 stages deployed, a variable and a secret each, one git remote
pushed to). `stackyard backup` is timed `--runs` times while the platform runs (the file
size too), then `stackyard restore` the same number of times, each into a fresh data
directory; the platform is stopped with its tasks; one restored copy is started on other
ports and the time from `stackyard up -d` to every stage serving its release is taken.
Usage:
    .venv/bin/python -m bench.backup_restore [--runs 3] [--no-write]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import STACKYARD, start_platform, stop_platform
from tests.integration.test_backup_restore import STACKS, converged, make_stack

from bench.report import bench_main
from stackyard.platform.diskuse import human_bytes


def measure(runs: int) -> dict[str, Any]:
    found: dict[str, Any] = {"backup": [], "restore": []}
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as scratch:
        tmp = Path(scratch)
        yard = start_platform(tmp / "original")
        try:
            for stack in STACKS:
                make_stack(yard, stack, tmp)
            for run in range(runs):
                started = time.monotonic()
                taken = json.loads(yard.cli("backup", str(tmp / f"b{run}.tar"), "--json").stdout)
                found["backup"].append(time.monotonic() - started)
            found["bytes"] = taken["bytes"]
            found["registry_bytes"] = taken["manifest"]["registry_bytes"]
        finally:
            stop_platform(yard)
        for run in range(runs):
            started = time.monotonic()
            subprocess.run(
                [
                    *STACKYARD,
                    "restore",
                    str(tmp / f"b{run}.tar"),
                    "--data-dir",
                    str(tmp / f"restored{run}"),
                ],
                env=yard.env,
                capture_output=True,
                check=True,
                timeout=600,
            )
            found["restore"].append(time.monotonic() - started)
        started = time.monotonic()
        restored = start_platform(tmp / "restored0")
        try:
            for stack, stages in STACKS.items():
                for stage in stages:
                    converged(restored, stack, stage)
            found["serving"] = time.monotonic() - started
        finally:
            stop_platform(restored)
    return found


def render(runs: int, found: dict[str, Any]) -> str:
    backup, restore = statistics.median(found["backup"]), statistics.median(found["restore"])
    stages = sum(len(s) for s in STACKS.values())
    return (
        "## Backup and restore\n\n"
        f"`bench/backup_restore.py`: a platform with {len(STACKS)} stacks ({stages} stages "
        "deployed, a variable and a secret each), backed up while it runs, then restored into "
        f"a fresh data directory; median of {runs}:\n\n"
        "| step | time |\n|---|---|\n"
        f"| `stackyard backup` (a {human_bytes(found['bytes'])} file, "
        f"{human_bytes(found['registry_bytes'])} of it registry) | {backup:.1f} s |\n"
        f"| `stackyard restore` | {restore:.1f} s |\n"
        f"| `stackyard up -d` of the restored copy until every stage serves its release | "
        f"{found['serving']:.1f} s |\n\n"
        "Both commands include starting the CLI (about 0.5 s here). The restore runs the "
        "database migrations and remakes the git remotes from their bundles.\n\n"
        f"Reproduce: `.venv/bin/python -m bench.backup_restore --runs {runs}`\n"
    )


if __name__ == "__main__":
    bench_main("backup_restore", __doc__, measure, render, runs=3)
