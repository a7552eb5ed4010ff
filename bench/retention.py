"""Disk use before and after retention: 30 builds and releases of one stack, one stack deleted.

Starts a real platform on loopback (free ports, temporary data dir, stopped in the end)
with the default `--keep-releases 10`. A stack `gone` is built, released and deployed, then
deleted; a stack `keep` (`examples/hello`, whose Dockerfile adds 1 MB of random bytes per
build, as an app's own code layer would) is built and released to `dev` 30 times, each
from a new commit, and its last release deployed. Then `stackyard prune` runs; its report
gives the bytes per part of the data directory and the engine's images of the platform,
before and after, and how long the registry was read-only for its garbage collection.
Usage:
    .venv/bin/python -m bench.retention [--runs 30] [--no-write]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import RunningPlatform, start_platform, stop_platform
from tests.integration.test_retention import build_and_release, new_stack

from bench.report import bench_main
from stackyard.platform.diskuse import human_bytes

KEEP = 10
LAYER = (
    "FROM busybox:latest\nCOPY www /www\nRUN head -c 1048576 /dev/urandom > /code.bin\n"
    'CMD ["sh", "-c", "exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]\n'
)


def measure(builds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as scratch:
        tmp = Path(scratch)
        yard = start_platform(tmp / "data", up_args=("--keep-releases", str(KEEP)))
        try:
            return _scenario(yard, tmp, builds)
        finally:
            stop_platform(yard)


def _scenario(yard: RunningPlatform, tmp: Path, builds: int) -> dict[str, Any]:
    new_stack(yard, "gone", tmp)
    build_and_release(yard, "gone")
    yard.cli("deploy", "gone", "--stage", "dev", timeout=300)
    repo = new_stack(yard, "keep", tmp)
    repo.write("Dockerfile", LAYER)
    started = time.monotonic()
    for number in range(1, builds + 1):
        repo.set_version(str(number))
        build_and_release(yard, "keep")
    building = time.monotonic() - started
    yard.cli("deploy", "keep", "--stage", "dev", timeout=300)
    yard.cli("stacks", "delete", "gone", "--yes")
    started = time.monotonic()
    report = json.loads(yard.cli("prune", "--json", timeout=600).stdout)
    report["seconds"] = time.monotonic() - started
    report["building"] = building
    report["builds"] = builds
    return dict(report)


def render(builds: int, found: dict[str, Any]) -> str:
    after = found["after"]
    rows = "".join(
        f"| {part} | {human_bytes(size)} | {human_bytes(after[part])} | "
        f"{human_bytes(size - after[part])} |\n"
        for part, size in found["before"].items()
    )
    before_total, after_total = sum(found["before"].values()), sum(after.values())
    return (
        "## Retention: disk use before and after\n\n"
        f"`bench/retention.py`: {builds} builds and releases of one stack (each build adds a "
        "1 MB layer of its own, as an app's code would), its last release deployed, and a "
        "second stack built, deployed and deleted; then `stackyard prune` with the default "
        f"`--keep-releases {KEEP}`. Bytes per part of the data directory (file sizes) and of "
        "the platform's images in the engine (bytes only those images hold), from the run's "
        "own report:\n\n"
        "| part | before | after | freed |\n|---|---|---|---|\n"
        f"{rows}"
        f"| **total** | {human_bytes(before_total)} | {human_bytes(after_total)} | "
        f"{human_bytes(before_total - after_total)} |\n\n"
        f"Removed: {len(found['manifests'])} registry manifests (the {builds - KEEP} builds no "
        "kept release uses; the deleted stack's manifests went with it, its blobs now), "
        f"{len(found['engine_references'])} engine image references, {len(found['files'])} "
        f"log files or folders. The run took {found['seconds']:.1f} s (`stackyard prune`, "
        "measured around the CLI call); the registry was read-only for "
        f"{found['garbage_collection_seconds']:.1f} s of it (restart read-only, "
        "`garbage-collect`, restart). The builds and releases before it took "
        f"{found['building']:.0f} s. Logs grow during the run: the collector's output goes "
        "to `registry.log`.\n\n"
        f"Reproduce: `.venv/bin/python -m bench.retention --runs {builds}`\n"
    )


if __name__ == "__main__":
    bench_main("retention", __doc__, measure, render, runs=30)
