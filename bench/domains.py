"""Host names over HTTPS: what adding or removing a name costs the stage's other names, and
how long a new name waits for its certificate.

A real data plane (the keeper, two Caddies) and real Pebble with its DNS mock, all on
loopback, as in tests/integration/test_router_tls.py. One stage is served on
``steady.test`` with a Pebble certificate.

1. **Name changes under load.** ``wrk -t2 -c16`` over HTTPS on ``steady.test`` (keep-alive)
   while the same stage gains a name, a second one, and loses both again: ``--rounds``
   rounds of those 3 changes (each new name gets its certificate). Next to it, a run of
   the same length with no change. Failed requests (socket errors and non-2xx) per run.
   ``--save FILE`` keeps the figures; ``--before FILE`` reports a saved run (say, of the
   code before names moved to the responder: ``PYTHONPATH=<old src>``) next to this one.
   ``--tls internal``: the stage and its names have ``tls: internal`` (bundles the router
   mints from Caddy's local CA; its own section of the figures); ``--tls both``: acme,
   then internal, reported side by side in that section.
2. **Time to a valid certificate.** From ``ensure_route`` of a route with a new name
   (what `stackyard domains add` leads to) to ``certificates()`` saying ``valid``:
   ``--runs`` names.

Usage:
    .venv/bin/python -m bench.domains [--rounds 3] [--runs 5] [--no-write]
        [--save FILE] [--before FILE] [--tls acme|internal|both]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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


def measure(rounds: int, runs: int, directory: Path, tls: str = "acme") -> Figures:
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
        steady = Route("steady-prod", host="steady.test", tls=tls)  # type: ignore[arg-type]
        router.ensure_route(steady, [steady_app.dial])
        wait_valid(router, steady)
        url = f"https://steady.test:{pebble.tls_port}/"
        figures = Figures([], [], 3 * rounds, [])
        for run in range(2):
            with Load(url, 60, pin=directory) as load:
                time.sleep(1)
                began = time.monotonic()
                for n in range(rounds):
                    one = (f"o{run}-{n}.test",)
                    for aliases in (one, (*one, f"m{run}-{n}.test"), ()):
                        changed = Route("steady-prod", host="steady.test", aliases=aliases,
                                        tls=tls)  # type: ignore[arg-type]  # fmt: skip
                        router.ensure_route(changed, [steady_app.dial])
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
            route = Route(f"new{n}-prod", host=f"new{n}.test", tls=tls)  # type: ignore[arg-type]
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


def save(figures: Figures, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(figures), indent=1))


def load(path: Path) -> Figures:
    raw = json.loads(path.read_text())
    results = {key: [WrkResult(**r) for r in raw[key]] for key in ("steady", "changing")}
    return Figures(results["steady"], results["changing"], raw["changes"], raw["issue_seconds"])


def report_internal(figures: Figures, rounds: int, acme: Figures | None = None) -> str:
    """The figures of a ``--tls internal`` run, next to those of ``tls: acme`` names from
    the same invocation (``--tls both``)."""
    runs = [("internal", figures), *([("acme", acme)] if acme else [])]
    rows = [
        (f"`{mode}` | {kind}", results)
        for mode, found in runs
        for kind, results in (
            (f"{len(found.changing)} runs with {found.changes} name changes each", found.changing),
            (f"{len(found.steady)} runs with no change", found.steady),
        )
    ]
    issue = figures.issue_seconds
    return "\n".join([
        "## Host names with `tls: internal`: adding and removing names",
        "",
        f"As above, with the stage and its names on `tls: internal` (certificates the router "
        f"mints from Caddy's local CA, served through the certificates helper): "
        f"{len(figures.changing)} runs with {figures.changes} name changes each "
        f"({rounds} rounds), and as many of the same length with no change"
        + (", next to the same for `tls: acme` names (Pebble) in the same invocation:"
           if acme else ":"),
        "",
        "| tls | runs | requests | failed | of which |",
        "|---|---|---|---|---|",
        *[f"| {name} | {sum(r.requests for r in results)} | "
          f"{sum(r.errors for r in results)} | connect {sum(r.connect for r in results)}, "
          f"read {sum(r.read for r in results)}, timeout {sum(r.timeout for r in results)}, "
          f"non-2xx {sum(r.non2xx for r in results)} |" for name, results in rows],
        "",
        "Before (the internal names a subject list of the tls app's internal policy), each "
        "change was a config change, which Caddy 2.6 applies as a reload that closes idle "
        "keep-alive connections: 50 of 3,763 requests failed (read errors) over 18 changes. "
        "Now a name is a bundle file and a line of the responder's table: no reload "
        "(docs/decisions.md, *`tls: internal` names without a reload*). Time from "
        f"`ensure_route` to a valid certificate, {len(issue)} names: median "
        f"{statistics.median(issue):.3f} s (minted before the name is served).",
        "",
        f"Reproduce: `.venv/bin/python -m bench.domains --tls both --rounds {rounds} "
        f"--runs {len(issue)}`",
    ])  # fmt: skip


def report(figures: Figures, rounds: int, before: Figures | None = None) -> str:
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
        f"`wrk -t2 -c16` over HTTPS (keep-alive) on one stage's name, two runs while the same "
        f"stage gains a name, a second one and loses both ({rounds} rounds: "
        f"{figures.changes} name changes per run, each new name getting its certificate), "
        "and two runs of the same length with no change:",
        "",
        "| code | runs | requests | failed | of which |",
        "|---|---|---|---|---|",
        *([
            row(f"before (names in Caddy's config) | {len(before.changing)} runs with "
                f"{before.changes} name changes each", before.changing),
            row(f"before | {len(before.steady)} runs with no change", before.steady),
        ] if before else []),
        row(f"now (names in the responder) | {len(figures.changing)} runs with "
            f"{figures.changes} name changes each", figures.changing),
        row(f"now | {len(figures.steady)} runs with no change", figures.steady),
        "",
        "Before, a name change was a Caddy config change, and Caddy 2.6 applies every config "
        "change as a reload that re-creates its listeners and closes idle keep-alive "
        "connections. Now a name is a change of the responder's table and certificates come "
        "on demand (docs/router.md, *Names and certificates*): no reload.",
        "",
        f"Time from `ensure_route` with a new name to a valid certificate in Caddy's storage "
        f"(now obtained on demand at the router's warming handshake; the other Caddy loads it "
        f"at its first handshake for the name), against Pebble (no validation delay), "
        f"{len(issue)} names: median {statistics.median(issue):.2f} s, max {max(issue):.2f} s"
        + (f" (before: median {statistics.median(before.issue_seconds):.2f} s)."
           if before and before.issue_seconds else "."),
        "",
        f"Reproduce: `.venv/bin/python -m bench.domains --rounds {rounds} --runs {len(issue)}`"
        + (" after the same with `--save before.json --no-write` and `PYTHONPATH` set to the "
           "`src` of the code before (`git archive <commit> src`), with `--before before.json`"
           if before else ""),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--save", type=Path, help="write this run's figures to a JSON file")
    parser.add_argument("--before", type=Path, help="a saved run to report next to this one")
    parser.add_argument("--tls", choices=("acme", "internal", "both"), default="acme")
    args = parser.parse_args()
    acme = None
    if args.tls == "both":  # acme first, then internal, reported side by side
        with tempfile.TemporaryDirectory(prefix="stackyard-bench-domains-") as tmp:
            acme = measure(args.rounds, args.runs, Path(tmp), "acme")
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-domains-") as tmp:
        tls = "internal" if args.tls == "both" else args.tls
        figures = measure(args.rounds, args.runs, Path(tmp), tls)
    if args.save:
        save(figures, args.save)
    if args.tls != "acme":
        body = report_internal(figures, args.rounds, acme)
    else:
        body = report(figures, args.rounds, load(args.before) if args.before else None)
    print(body)
    if not args.no_write:
        update_section("domains" if args.tls == "acme" else "domains-internal", body)


if __name__ == "__main__":
    main()
