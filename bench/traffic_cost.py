"""What `stackyard traffic` costs, before and after the traffic store.

Writes Caddy-shaped JSON access log lines (the fields Caddy 2.6 logs for a proxied request,
about 600 bytes each) into a temporary directory, as one Caddy's current file plus rolled
ones, and times per stage: before the store, what ``DeployService.traffic`` did
(``read_access``: every file, parsed, filtered by host; then ``traffic_minutes`` over the
last hour); with the store, the TrafficCounter's first count of those logs (SQLite) and
then a call (count what is new, read the last hour's buckets); and reading a week of one
stage's buckets. Sizes: 10 MB (one full file) and 50 MB (a Caddy's whole rolled set: 5
files of 10 MB). No network. The median of ``--runs`` is reported.
Usage:
    .venv/bin/python -m bench.traffic_cost [--runs 5] [--no-write]
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from tests.state_db import state_with_routes

from bench.report import bench_main
from stackyard.deploy.traffic import Serving, traffic_minutes
from stackyard.deploy.trafficstore import TrafficCounter
from stackyard.router.accesslog import read_access
from stackyard.router.caddy import CaddyRouter
from stackyard.store.models import Deployment, StageRoute, TrafficBucket

MB = 1024 * 1024
SIZES = (10, 50)  # MB of logs
HOST = "prod.shop.apps.example.com"


def line(ts: float, n: int) -> str:
    return json.dumps(
        {
            "level": "info",
            "ts": ts,
            "logger": "http.log.access.sy-access-hosts",
            "msg": "handled request",
            "request": {
                "remote_ip": "127.0.0.1",
                "remote_port": str(40000 + n % 20000),
                "proto": "HTTP/2.0",
                "method": "GET",
                "host": HOST if n % 4 else "dev.shop.apps.example.com",
                "uri": f"/products/{n % 5000}?page={n % 7}",
                "headers": {
                    "User-Agent": ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"],
                    "Accept": ["text/html,application/xhtml+xml"],
                    "Accept-Encoding": ["gzip, deflate, br"],
                },
                "tls": {
                    "resumed": False,
                    "version": 772,
                    "cipher_suite": 4865,
                    "proto": "h2",
                    "server_name": HOST,
                },
            },
            "user_id": "",
            "duration": 0.002 + (n % 97) / 1000,
            "size": 5120,
            "status": 500 if n % 200 == 0 else 200,
            "resp_headers": {"Server": ["Caddy"], "Content-Type": ["text/html"]},
        }
    )


def write_logs(directory: Path, megabytes: int, now: float) -> tuple[Path, int]:
    """``megabytes`` of lines over the last two hours, in 10 MB files; the current file's
    path and the number of lines."""
    sample = len(line(now, 0)) + 1
    total = megabytes * MB // sample
    step = 7200 / total
    current = directory / "sy-access-hosts.log"
    files = [directory / f"sy-access-hosts-{i:02d}.log" for i in range(megabytes // 10 - 1)]
    files.append(current)
    per_file = total // len(files)
    n = 0
    for path in files:
        with path.open("w", encoding="utf-8") as out:
            for _ in range(per_file):
                out.write(line(now - 7200 + n * step, n) + "\n")
                n += 1
    return current, n


@dataclass
class Size:
    """One size of logs: lines written, and seconds per run of each way of reading them."""

    lines: int
    counted: int  # requests of the last hour, as each way found them (they must agree)
    before: list[float] = field(default_factory=list)  # read_access + traffic_minutes
    first_count: list[float] = field(default_factory=list)  # the store folds every line
    read: list[float] = field(default_factory=list)  # count (nothing new) + the last hour


@dataclass
class Figures:
    sizes: dict[int, Size] = field(default_factory=dict)
    week: list[float] = field(default_factory=list)  # a week of buckets of one stage, read


def store(directory: Path, now: float) -> tuple[sessionmaker[Session], TrafficCounter, int]:
    """A state database with the stage served on HOST (two releases), and a counter over
    the Caddy whose access log directory is ``directory``."""
    directory.mkdir(exist_ok=True)
    state = state_with_routes(directory / "state.db", "shop", [StageRoute(stage="prod", host=HOST)])
    sessions, stack_id = state.sessions, state.stack_id
    with sessions.begin() as session:
        for number, (release, ago) in enumerate([(1, 86400), (2, 1800)], start=1):
            session.add(Deployment(stack_id=stack_id, stage="prod", number=number,
                                   release_number=release, digest=f"sha256:{release}",
                                   status="COMPLETED",
                                   finished_at=datetime.fromtimestamp(now - ago, UTC)))  # fmt: skip
    router = CaddyRouter([directory / "caddy-1.sock"], directory / "directory.sock")
    return sessions, TrafficCounter(sessions, router, interval=0), stack_id


def measure(runs: int) -> Figures:
    figures = Figures()
    now = time.time()
    serving = [Serving(now - 86400, 1, "sha256:1"), Serving(now - 1800, 2, "sha256:2")]
    hour_ago = (now - 3600) // 60 * 60  # a minute's start: buckets are whole minutes
    for size in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            logs = Path(tmp) / "caddy-1-access"
            logs.mkdir()
            current, lines = write_logs(logs, size, now)
            found = Size(lines, 0)
            for run in range(runs):
                started = time.perf_counter()
                records = read_access([current], hosts=[HOST])
                minutes = traffic_minutes(records, serving, since=hour_ago)
                found.before.append(time.perf_counter() - started)
                found.counted = sum(m.requests for m in minutes)
                _, counter, stack_id = store(Path(tmp) / f"run{run}", now)
                os.symlink(logs, Path(tmp) / f"run{run}" / "caddy-1-access")
                started = time.perf_counter()
                counter.count()
                found.first_count.append(time.perf_counter() - started)
                started = time.perf_counter()
                counter.count()
                stored = counter.minutes(stack_id, "prod", hour_ago)
                found.read.append(time.perf_counter() - started)
                if sum(m.requests for m in stored) != found.counted:
                    raise RuntimeError("the store and the logs disagree")
            figures.sizes[size] = found
    with tempfile.TemporaryDirectory() as tmp:
        figures.week = week_read(Path(tmp), runs, now)
    return figures


def week_read(directory: Path, runs: int, now: float) -> list[float]:
    """Seconds to read 7 days of one stage's minutes (10,080 buckets of ~40 latency bins)."""
    sessions, counter, stack_id = store(directory, now)
    first = int(now // 60) - 7 * 24 * 60 + 1
    with sessions.begin() as session:
        session.add_all(
            TrafficBucket(
                stack_id=stack_id,
                stage="prod",
                minute=minute,
                release=2,
                digest="sha256:2",
                requests=600,
                status_2xx=597,
                status_3xx=0,
                status_4xx=2,
                status_5xx=1,
                latency={str(80 + n): 15 for n in range(40)},
            )
            for minute in range(first, first + 7 * 24 * 60)
        )
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        found = counter.minutes(stack_id, "prod", now - 7 * 86400)
        times.append(time.perf_counter() - started)
    if len(found) != 7 * 24 * 60:
        raise RuntimeError(f"read {len(found)} minutes of a week")
    return times


def report(runs: int, figures: Figures) -> str:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} s"

    rows = [
        f"| {size} MB | {s.lines:,} | {s.counted:,} | {median(s.before)} | "
        f"{median(s.first_count)} ({s.lines / statistics.median(s.first_count):,.0f} lines/s) "
        f"| {median(s.read)} |"
        for size, s in figures.sizes.items()
    ]
    return "\n".join(
        [
            "## `stackyard traffic`: reading the access logs, before and after the store",
            "",
            "One Caddy's access log of host routes, Caddy-shaped JSON lines (~600 bytes), "
            "spread over two hours, three in four for the stage asked about. *Before* (up to "
            "the traffic store): each call read every file (`read_access`) and bucketed the "
            "last hour (`traffic_minutes`). *After*: the counter folds each line into the "
            "state database once (*first count*: what a platform does once with the logs "
            "it already has, then every 10 s with what is new), and a call counts what is "
            "new (nothing here) and reads the last hour's buckets (*read*). Median of "
            f"{runs} runs, SQLite:",
            "",
            "| logs | lines | requests (last hour) | before: per call | after: first count "
            "| after: per call |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "A week of one stage's minutes (10,080 buckets of 40 latency bins each, what "
            f"`--minutes 10080` reads): {median(figures.week)}.",
            "",
            "Reproduce: `.venv/bin/python -m bench.traffic_cost --runs 5`",
        ]
    )


if __name__ == "__main__":
    bench_main("traffic_cost", __doc__, measure, report, runs=5)
