"""What reading a BuildKit session costs: a BuildKit build of a 50 MiB context through
the build proxy, with this checkout's proxy (the session read frame by frame) against
another checkout's (``--before DIR``, e.g. main before the change: bytes relayed as they
are). Each run writes a new random file, so the whole context crosses the session; runs
alternate between the two sides, the side going first alternating. The proxy runs in a
child process per run (not timed); the clock spans ``docker build`` alone.
Usage:
    .venv/bin/python -m bench.buildkit_session --before /tmp/main [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench.proxy_sides import DOCKER, child_seconds, interleaved, median_row, proxy_host
from bench.report import update_section

SIZE = 50 * 1024 * 1024


def one_build(context: Path) -> float:
    """In the child: build ``context`` with BuildKit through a proxy socket."""
    from tests.integration.buildkit_budget import kept_buildkit_budget

    out = context.parent / "out"
    try:
        with proxy_host(nest_builds_in="/docker/holder") as host, kept_buildkit_budget():
            config = str(context.parent / "config")
            env = {"PATH": os.environ["PATH"], "DOCKER_HOST": host,
                   "DOCKER_BUILDKIT": "1", "DOCKER_CONFIG": config}  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(
                [DOCKER, "build", "--network", "host", "--output", f"type=local,dest={out}",
                 str(context)], env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"the build failed: {done.stderr[-2000:]}")
    return elapsed


def reader_seconds(runs: int = 5) -> float:
    """CPU seconds the session reader spends on 50 MiB of 16 KiB DATA frames each way, read
    64 KiB at a time as the relay reads them (median of ``runs``)."""
    from stackyard.images.dockerproxy.server import _CheckedSession
    from stackyard.images.dockerproxy.session import DATA, PREFACE, frame_bytes

    chunk = os.urandom(16384)
    frames = b"".join(frame_bytes(DATA, 0, 7, chunk) for _ in range(SIZE // len(chunk)))

    connection = SimpleNamespace(socket=SimpleNamespace(session_builds={}, refusals=[]))

    async def both_ways() -> float:
        session = _CheckedSession(connection, "bench")  # type: ignore[arg-type]
        started = time.process_time()
        await session.from_engine(PREFACE)
        for at in range(0, len(frames), 65536):
            await session.from_client(frames[at : at + 65536])
            await session.from_engine(frames[at : at + 65536])
        return time.process_time() - started

    return statistics.median(asyncio.run(both_ways()) for _ in range(runs))


def run_side(source: Path, context: Path) -> float:
    (context / "big").write_bytes(os.urandom(SIZE))  # new content: the whole context is sent
    return child_seconds("bench.buildkit_session", source, str(context))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", type=Path)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child is not None:
        print(f"{one_build(args.child):.4f}")
        return
    sides = {"after": Path.cwd(), "before": args.before}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-session-") as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        (Path(tmp) / "config").mkdir()
        (context / "Dockerfile").write_text("FROM busybox:latest\nCOPY big /big\n")
        times = interleaved(sides, args.runs, lambda side: run_side(side, context))
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    load_after = os.getloadavg()[0]
    reader = reader_seconds()
    body = (
        "## BuildKit session: a 50 MiB context through the build proxy\n\n"
        "`DOCKER_BUILDKIT=1 docker build --output type=local,dest=DIR` of a context "
        "holding a new random 50 MiB file each run (so all of it crosses the session), "
        "through one build's proxy socket: the proxy reading the session frame by frame "
        "(HTTP/2, HPACK, the Dockerfile's gRPC stream) against the proxy before that "
        f"change (bytes relayed as they are). {args.runs} runs each, interleaved; load "
        f"average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end.\n\n"
        "| proxy | median | runs |\n| --- | --- | --- |\n"
        + median_row("relays bytes (before)", times["before"])
        + median_row("reads the session (after)", times["after"])
        + "\n"
        f"Ratio after/before: **{after / before:.2f}x** (on a machine shared with other "
        "builds and tests; see the reader's own work below).\n\n"
        f"The session reader's own work: **{reader * 1000:.0f} ms of CPU** for 50 MiB each "
        "way (16 KiB DATA frames read 64 KiB at a time, as the relay reads them; median of "
        "5), about "
        f"{reader * 1000 / 100:.2f} ms per MiB relayed.\n\n"
        "Reproduce: `git worktree add /tmp/before <commit before the change>`, then "
        "`.venv/bin/python -m bench.buildkit_session --before /tmp/before --runs 5`"
    )
    print(body)
    if not args.no_write:
        update_section("buildkit_session", body)


if __name__ == "__main__":
    main()
