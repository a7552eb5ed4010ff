"""What `stackyard traffic` costs: reading a host route's access logs and bucketing them.

Writes Caddy-shaped JSON access log lines (the fields Caddy 2.6 logs for a proxied request,
about 600 bytes each) into a temporary directory, as one Caddy's current file plus rolled
ones, and times what ``DeployService.traffic`` does per stage: ``read_access`` (every file,
parsed, filtered by host) then ``traffic_minutes`` over the last hour. Sizes: 10 MB (one
full file) and 50 MB (a Caddy's whole rolled set: 5 files of 10 MB). Pure CPU and disk
cache; no network. The median of ``--runs`` is reported.
Usage:
    .venv/bin/python -m bench.traffic_cost [--runs 5] [--no-write]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.report import bench_main
from stackyard.deploy.traffic import Serving, traffic_minutes
from stackyard.router.accesslog import read_access

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


def measure(runs: int) -> dict[int, tuple[int, list[float], int]]:
    """Per size: lines written, seconds per run, requests of the last hour counted."""
    found: dict[int, tuple[int, list[float], int]] = {}
    now = time.time()
    serving = [Serving(now - 86400, 1, "sha256:" + "1" * 64), Serving(now - 1800, 2, "sha256:2")]
    for size in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            current, lines = write_logs(Path(tmp), size, now)
            times, counted = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                records = read_access([current], hosts=[HOST])
                minutes = traffic_minutes(records, serving, since=now - 3600)
                times.append(time.perf_counter() - started)
                counted = sum(m.requests for m in minutes)
            found[size] = (lines, times, counted)
    return found


def report(runs: int, found: dict[int, tuple[int, list[float], int]]) -> str:
    rows = [
        f"| {size} MB | {lines:,} | {counted:,} | {statistics.median(times):.2f} s | "
        f"{lines / statistics.median(times):,.0f} |"
        for size, (lines, times, counted) in found.items()
    ]
    return "\n".join(
        [
            "## `stackyard traffic`: the cost of reading the access logs",
            "",
            "One Caddy's access log of host routes, Caddy-shaped JSON lines (~600 bytes), "
            "spread over two hours, three in four for the stage asked about; the time of "
            "`read_access` (every file, parsed, filtered by host) and `traffic_minutes` "
            f"(the last hour, by minute and release). Median of {runs} runs:",
            "",
            "| logs | lines | requests counted (last hour) | time per call | lines/s |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "The figures are computed on each call (docs/decisions.md, *Traffic by release*): "
            "with two Caddies, each call reads both sets, so a full 5 x 10 MB rotation on "
            "both is twice the 50 MB row.",
            "",
            "Reproduce: `.venv/bin/python -m bench.traffic_cost --runs 5`",
        ]
    )


if __name__ == "__main__":
    bench_main("traffic_cost", __doc__, measure, report, runs=5)
