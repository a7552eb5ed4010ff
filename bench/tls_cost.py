"""The cost of TLS: requests per second and p99 latency through the platform's Caddy over
HTTPS (keep-alive) next to plain HTTP, in one run.

A real data plane (the keeper, two Caddies) on loopback, as in bench/domains.py, and two
backends: ``caddy respond`` (a tiny Go server that keeps upstream connections open: what
is left is mostly the router's own work) and tests/integration/backends.py (Python's
``http.server``, the one the router tests and benches use: a slow app). Per backend two host
routes on the same Caddies: ``plain-N.test`` (``tls: off``, the HTTP port) and
``secure-N.test`` (``tls: internal``, Caddy's local CA, on the HTTPS port; the handshake and
ciphers are those of an ACME certificate's: same server, same key type). ``wrk -t2 -c16
--latency`` for ``--seconds`` on each, ``--runs`` rounds, interleaved (the order swaps each
round) so the load other work puts on the machine falls on all; the figures are medians
over the rounds. wrk keeps its connections open, so the handshakes are 16 per run: this is
the steady cost of encryption, not of handshakes.

Usage:
    .venv/bin/python -m bench.tls_cost [--runs 5] [--seconds 10] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from tests.integration.backends import Backend
from tests.integration.wrk import PIN_LOOPBACK
from tests.router_contract import free_port

from stackyard.platform.dataplane import ensure_dataplane, stop_dataplane
from stackyard.router.base import Route
from stackyard.router.caddy import CaddyRouter
from stackyard.settings import Settings

from .report import update_section

THREADS, CONNECTIONS = 2, 16
Figures_ = TypeVar("Figures_")
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Run:
    requests_per_second: float
    p99_ms: float
    errors: int
    requests: int = 0  # all wrk sent ("N requests in ...")


BACKENDS = ("caddy respond", "http.server")
SCHEMES = ("HTTP", "HTTPS")


@dataclass
class Figures:
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)  # (backend, scheme)
    load: list[float] = field(default_factory=list)  # 1-minute load average before each round


class Respond:
    """``caddy respond`` on a free 127.0.0.1 port (its admin endpoint off), stopped by pid."""

    def __init__(self, directory: Path) -> None:
        self.dial = f"127.0.0.1:{free_port()}"
        home = directory / "respond"
        home.mkdir()
        self.process = subprocess.Popen(
            ["caddy", "respond", "--listen", self.dial, "--body", "app"],
            env={**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home),
                 "XDG_CONFIG_HOME": str(home)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def parse(text: str) -> Run:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if rate is None or p99 is None:
        raise RuntimeError(f"wrk printed no rate or p99:\n{text}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    failed = sum(map(int, errors.groups())) if errors else 0
    sent = re.search(r"(\d+) requests in", text)
    return Run(
        float(rate[1]),
        float(p99[1]) * _UNIT[p99[2]],
        failed + int(non2xx[1] if non2xx else 0),
        int(sent[1]) if sent else 0,
    )


def wrk(url: str, seconds: int, pin: Path) -> Run:
    """One bounded wrk run, every connection to 127.0.0.1 whatever host the URL names."""
    argv = ["wrk", "-s", str(pin), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s",
            "--timeout", "5s", "--latency", url]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        output, _ = process.communicate(timeout=seconds + 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return parse(output)


def answers(url: str, host: str) -> None:
    """Wait until ``url`` (on 127.0.0.1) answers 200 for ``host``: the route is live."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with httpx.Client(verify=False, timeout=5, trust_env=False) as client:  # noqa: S501 - local CA, bench only
                answer = client.get(url, headers={"Host": host}, extensions={"sni_hostname": host})
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host} does not answer on {url}")
        time.sleep(0.25)


def measure(runs: int, seconds: int, directory: Path) -> Figures:
    settings = Settings(data_dir=directory / "data", registry_port=free_port())
    settings.data_dir.mkdir(mode=0o700, parents=True)
    ensure_dataplane(settings)
    respond, python = Respond(directory), Backend("app")
    dials = dict(zip(BACKENDS, (respond.dial, python.dial), strict=True))
    http_port, https_port = free_port(), free_port()
    router = CaddyRouter(settings.caddy_admin_sockets, settings.dataplane_socket,
                         host_port=http_port, https_port=https_port, timeout=20.0)  # fmt: skip
    pin = directory / "pin-loopback.lua"
    pin.write_text(PIN_LOOPBACK)
    try:
        urls: dict[tuple[str, str], str] = {}
        for n, (backend, dial) in enumerate(dials.items()):
            router.ensure_route(Route(f"plain{n}-prod", host=f"plain{n}.test"), [dial])
            router.ensure_route(Route(f"secure{n}-prod", host=f"secure{n}.test", tls="internal"),
                                [dial])  # fmt: skip
            answers(f"http://127.0.0.1:{http_port}/", f"plain{n}.test")
            answers(f"https://127.0.0.1:{https_port}/", f"secure{n}.test")
            urls[backend, "HTTP"] = f"http://plain{n}.test:{http_port}/"
            urls[backend, "HTTPS"] = f"https://secure{n}.test:{https_port}/"
        figures = Figures(runs={key: [] for key in urls})
        interleaved(runs, list(urls), figures.runs, figures.load,
                    lambda key: wrk(urls[key], seconds, pin))  # fmt: skip
        return figures
    finally:
        router.close()
        respond.stop()
        python.stop()
        stop_dataplane(settings)


def table_row(key: tuple[str, str], runs: list[Run]) -> str:
    """| backend | kind | median requests/s | median p99 | failed | requests/s per round |"""
    rate = statistics.median(r.requests_per_second for r in runs)
    p99 = statistics.median(r.p99_ms for r in runs)
    each = ", ".join(f"{r.requests_per_second:.0f}" for r in runs)
    failed = sum(r.errors for r in runs)
    return f"| {key[0]} | {key[1]} | {rate:.0f} | {p99:.2f} | {failed} | {each} |"


def report(figures: Figures, runs: int, seconds: int) -> str:
    rate = {
        k: statistics.median(r.requests_per_second for r in rs) for k, rs in figures.runs.items()
    }
    p99 = {k: statistics.median(r.p99_ms for r in rs) for k, rs in figures.runs.items()}

    def ratio(backend: str) -> str:
        secure, plain = (backend, "HTTPS"), (backend, "HTTP")
        rates = [r.requests_per_second for r in figures.runs[plain]]
        spread = max(rates) - min(rates)
        within = "within" if abs(rate[secure] - rate[plain]) <= spread else "beyond"
        return (f"| {backend} | **{rate[secure] / rate[plain]:.2f}x** "
                f"| **{p99[secure] / p99[plain]:.2f}x** | {rate[secure] - rate[plain]:+.0f} "
                f"req/s, {within} HTTP's own spread of {spread:.0f} |")  # fmt: skip

    return "\n".join([
        "## The cost of TLS through the router",
        "",
        f"`wrk -t{THREADS} -c{CONNECTIONS} --latency -d{seconds}s` (keep-alive) through the "
        "data plane's Caddies, on a host route with `tls: off` (HTTP) and one with "
        "`tls: internal` (HTTPS, Caddy's local CA) to the same backend; two backends: "
        "`caddy respond` (fast, keeps upstream connections: mostly the router's own cost) "
        "and the router tests' Python `http.server` (a slow app, a new upstream connection "
        f"per request). {runs} rounds, all runs interleaved, medians:",
        "",
        "| backend | scheme | requests/s | p99 latency (ms) | failed | requests/s per round |",
        "|---|---|---|---|---|---|",
        *(table_row(key, runs) for key, runs in figures.runs.items()),
        "",
        "HTTPS / HTTP:",
        "",
        "| backend | requests/s | p99 latency | difference of the medians |",
        "|---|---|---|---|",
        *(ratio(backend) for backend in BACKENDS),
        "",
        "The machine has 2 cores, at times shared with other engineers' test runs: 1-minute "
        f"load average {min(figures.load):.1f}-{max(figures.load):.1f} at the start of the "
        "rounds "
        "(wrk, both Caddies and the backend compete for the same 2 cores); interleaving "
        "spreads that load over all runs, and the medians are of rounds, not of a quiet "
        "machine.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.tls_cost --runs {runs} --seconds {seconds}`",
    ])  # fmt: skip


def interleaved(
    rounds: int,
    keys: list[tuple[str, str]],
    runs: dict[tuple[str, str], list[Run]],
    load: list[float],
    one: Callable[[tuple[str, str]], Run],
) -> None:
    """``rounds`` rounds of ``one`` per key, every other round in reverse order (so no
    side always runs first on a warming machine), noting the load average per round."""
    for round_ in range(rounds):
        load.append(os.getloadavg()[0])
        for key in keys if round_ % 2 == 0 else list(reversed(keys)):
            run = one(key)
            runs[key].append(run)
            print(f"round {round_ + 1} {key[0]} {key[1]}: {run.requests_per_second:.0f} "
                  f"req/s, p99 {run.p99_ms:.2f} ms, {run.errors} failed",
                  flush=True)  # fmt: skip


def wrk_bench_main(
    section: str,
    description: str | None,
    measure: Callable[[int, int, Path], Figures_],
    report: Callable[[Figures_, int, int], str],
) -> None:
    """The command line of a wrk benchmark: ``--runs``, ``--seconds``, ``--no-write``; it
    measures in a temporary directory, prints the report and writes it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"stackyard-bench-{section}-") as tmp:
        figures = measure(args.runs, args.seconds, Path(tmp))
    body = report(figures, args.runs, args.seconds)
    print(body)
    if not args.no_write:
        update_section(section, body)


def main() -> None:
    wrk_bench_main("tls_cost", __doc__, measure, report)


if __name__ == "__main__":
    main()
