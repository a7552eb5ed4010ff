"""Host names over HTTPS: what adding or removing a name costs the stage's other names, and
how long a new name waits for its certificate.

A real data plane (the keeper, two Caddies) and real Pebble with its DNS mock, all on
loopback, as in tests/integration/test_router_tls.py. One stage is served on
``steady.test`` with a Pebble certificate.

1. **Name changes under load.** ``wrk -t2 -c16`` over HTTPS on ``steady.test`` (keep-alive)
   while another stage gets a route, a second name, loses it again, and its route is
   removed: ``--rounds`` rounds of those 3 changes (each an admin change, a reload, on
   both Caddies). Next to it, a run of the same length with no change. Failed requests
   (socket errors and non-2xx) per run.
2. **Time to a valid certificate.** From ``ensure_route`` of a route with a new name
   (what `stackyard domains add` leads to) to ``certificates()`` saying ``valid`` with
   every Caddy serving it: ``--runs`` names.

Usage:
    .venv/bin/python -m bench.domains [--rounds 3] [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.backends import Backend
from tests.integration.pebble import Pebble
from tests.integration.wrk import Load, WrkResult
from tests.router_contract import free_port

from stackyard.platform.dataplane import ensure_dataplane, stop_dataplane
from stackyard.router.base import Route
from stackyard.router.caddy import CaddyRouter
from stackyard.settings import Settings

from .report import update_section


@dataclass
class Figures:
    steady: list[WrkResult]
    changing: list[WrkResult]
    changes: int
    issue_seconds: list[float]


def wait_valid(router: CaddyRouter, route: Route, within: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if all(c.state == "valid" for c in router.certificates(route)):
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"{route.hosts} got no valid certificate within {within} s")


def measure(rounds: int, runs: int, directory: Path) -> Figures:
    pebble = Pebble(directory / "pebble", http_port=free_port(), tls_port=free_port()).start()
    settings = Settings(data_dir=directory / "data", registry_port=free_port())
    settings.data_dir.mkdir(mode=0o700, parents=True)
    ensure_dataplane(settings)
    steady_app, other_app = Backend("steady"), Backend("other")
    router = CaddyRouter(
        settings.caddy_admin_sockets,
        settings.dataplane_socket,
        host_port=pebble.http_port,
        https_port=pebble.tls_port,
        acme_ca=pebble.directory_url,
        acme_roots=[str(pebble.cert)],
        timeout=20.0,
    )
    try:
        steady = Route("steady-prod", host="steady.test", tls="acme")
        router.ensure_route(steady, [steady_app.dial])
        wait_valid(router, steady)
        url = f"https://steady.test:{pebble.tls_port}/"
        figures = Figures([], [], 3 * rounds, [])
        for run in range(2):
            with Load(url, 60, pin=directory) as load:
                time.sleep(1)
                began = time.monotonic()
                for n in range(rounds):
                    new = Route("other-prod", host="other.test", aliases=(f"o{run}-{n}.test",))
                    router.ensure_route(new, [other_app.dial])
                    router.ensure_route(Route("other-prod", host="other.test"), [other_app.dial])
                    router.remove_route(new)
                changing = time.monotonic() - began
                result = load.stop()
            figures.changing.append(result)
            with Load(url, 60, pin=directory) as load:
                time.sleep(1 + changing)
                figures.steady.append(load.stop())
            print(f"run {run + 1}: changing {figures.changing[-1].errors} failed of "
                  f"{figures.changing[-1].requests}; steady {figures.steady[-1].errors} "
                  f"failed of {figures.steady[-1].requests}", flush=True)  # fmt: skip
        for n in range(runs):
            route = Route(f"new{n}-prod", host=f"new{n}.test", tls="acme")
            started = time.monotonic()
            router.ensure_route(route, [other_app.dial])
            figures.issue_seconds.append(time.monotonic() - started + wait_valid(router, route))
            print(f"certificate {n + 1}: {figures.issue_seconds[-1]:.2f} s", flush=True)
            router.remove_route(route)
        return figures
    finally:
        router.close()
        steady_app.stop()
        other_app.stop()
        stop_dataplane(settings)
        pebble.stop()


def report(figures: Figures, rounds: int) -> str:
    def row(name: str, results: list[WrkResult]) -> str:
        failed = sum(r.errors for r in results)
        requests = sum(r.requests for r in results)
        detail = (
            f"connect {sum(r.connect for r in results)}, read {sum(r.read for r in results)}, "
            f"timeout {sum(r.timeout for r in results)}, non-2xx {sum(r.non2xx for r in results)}"
        )
        return f"| {name} | {requests} | {failed} | {detail} |"

    issue = figures.issue_seconds
    return "\n".join([
        "## Host names: adding and removing names, time to a certificate",
        "",
        f"`wrk -t2 -c16` over HTTPS (keep-alive) on one stage's name, two runs while another "
        f"stage's route is created, given a second name, loses it and is removed ({rounds} "
        f"rounds: {figures.changes} route changes per run, each one to five admin changes, "
        "and each admin change a reload of both Caddies), "
        "and two runs of the same length with no change:",
        "",
        "| runs | requests | failed | of which |",
        "|---|---|---|---|",
        row(f"{len(figures.changing)} runs with {figures.changes} name changes each",
            figures.changing),
        row(f"{len(figures.steady)} runs with no change", figures.steady),
        "",
        "A name change is a Caddy config change, and Caddy 2.6 applies every config change "
        "as a reload that re-creates its listeners and closes idle keep-alive connections: "
        "requests on the other names fail while it happens (see docs/router.md, *Names and "
        "certificates*). The requirement that adding or removing a name drops no request to the "
        "stage's other names is **not met** by this design; docs/decisions.md says what would.",
        "",
        f"Time from `ensure_route` with a new name to a valid certificate served by both "
        f"Caddies, against Pebble (no validation delay), {len(issue)} names: median "
        f"{statistics.median(issue):.2f} s, max {max(issue):.2f} s.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.domains --rounds {rounds} --runs {len(issue)}`",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-domains-") as tmp:
        figures = measure(args.rounds, args.runs, Path(tmp))
    body = report(figures, args.rounds)
    print(body)
    if not args.no_write:
        update_section("domains", body)


if __name__ == "__main__":
    main()
