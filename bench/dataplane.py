"""The apps keep serving when Stackyard does not: failed requests while the control plane
is down, and while the router itself restarts, next to a plain Caddy reload.

1. **Control plane down.** A real platform on loopback, two stacks of ``examples/hello``
   (``dev``, one replica each), ``wrk -t1 -c8`` on each stage's URL for the whole run.
   2 s in, the control plane (the ``stackyard up`` process) gets SIGKILL; it stays down
   ``--down`` seconds, then ``stackyard up -d`` starts it again, and the load goes on until
   both stages answer and 2 s more. Measured for this tree and for ``--previous`` (a git
   revision, run from ``git archive`` of its ``src`` with ``PYTHONPATH``, same Python and
   dependencies), interleaved.
2. **The router restarts.** On this tree, ``wrk -t2 -c16 -d10s`` on one stage; 2 s in,
   one of: nothing; SIGKILL one Caddy (the keeper starts it again, the other serves);
   SIGKILL both (what a single Caddy would see); ``caddy reload`` of one Caddy (``POST
   /load`` of its own config with ``Cache-Control: must-revalidate``, as ``caddy reload
   --force`` does); the same on both. ``--runs`` runs of each, interleaved.

Usage:
    .venv/bin/python -m bench.dataplane [--runs 3] [--down 20] [--previous HEAD~1] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import httpx
from tests.integration.conftest import RunningPlatform, free_port, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo
from tests.integration.wrk import Load, WrkResult

from bench.report import update_section
from stackyard.router.caddy import UnixSocketTransport

ROOT = Path(__file__).resolve().parent.parent
STACKYARD_YML = """\
stages:
  - name: dev
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 1, stop_timeout: 3}
"""
KILL_AT = 2.0  # seconds into the load
ROUTER_SECONDS = 10
EVENTS = ("nothing", "SIGKILL one Caddy", "SIGKILL both Caddies", "reload one Caddy",
          "reload both Caddies")  # fmt: skip


# -- a platform of one version ------------------------------------------------------------


@dataclass
class Version:
    name: str
    src: Path | None  # None: this tree

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.src)} if self.src else {}

    @property
    def legacy(self) -> bool:
        src = self.src or ROOT / "src"
        return "caddy_admin_port" in (src / "stackyard" / "settings.py").read_text()


def previous_src(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision, "src"],
                             capture_output=True, timeout=120, check=True)  # fmt: skip
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def start(version: Version, directory: Path) -> tuple[RunningPlatform, tuple[str, ...]]:
    options = ("--caddy-admin-port", str(free_port())) if version.legacy else ()
    return start_platform(directory / "data", version.env, options), options


def ship(platform: RunningPlatform, directory: Path, stack: str) -> str:
    repo = GitRepo.from_example("hello", directory / stack)
    repo.write("stackyard.yml", STACKYARD_YML)
    repo.commit("fast health checks")
    platform.cli("stacks", "create", stack, "--repo", str(repo.path))
    platform.cli("build", stack, timeout=300)
    platform.cli("release", stack, "--stage", "dev")
    platform.cli("deploy", stack, "--stage", "dev", timeout=300)
    url = json.loads(platform.cli("url", stack, "--stage", "dev", "--json").stdout)["url"]
    return f"{url.rstrip('/')}/"


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- 1. the control plane down ------------------------------------------------------------


@dataclass
class Downtime:
    version: str
    down_seconds: float  # from the kill until `up -d` returned
    wrk: list[WrkResult] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.wrk)

    @property
    def requests(self) -> int:
        return sum(w.requests for w in self.wrk)

    @property
    def per_minute(self) -> float:
        return 60 * self.errors / self.down_seconds if self.down_seconds else 0.0


def downtime_run(version: Version, down: float) -> Downtime:
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-dp-") as tmp:
        directory = Path(tmp)
        platform, options = start(version, directory)
        try:
            urls = [ship(platform, directory, name) for name in ("left", "right")]
            loads = [Load(url, 600, threads=1, connections=8) for url in urls]
            try:
                time.sleep(KILL_AT)
                killed = time.monotonic()
                os.kill(platform.pid, signal.SIGKILL)
                time.sleep(down)
                platform.cli("up", "-d", "--api-port", platform.api_url.rsplit(":", 1)[1],
                             "--registry-port", platform.registry.rsplit(":", 1)[1], *options,
                             timeout=120)  # fmt: skip
                back = time.monotonic() - killed
                deadline = time.monotonic() + 120
                while not all(answers(u) for u in urls) and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(2.0)
            finally:
                results = [load.stop() for load in loads]
            return Downtime(version.name, back, results)
        finally:
            # This tree's `down --all` also stops an earlier version (and its children).
            platform.env = {k: v for k, v in platform.env.items() if k != "PYTHONPATH"}
            if "PYTHONPATH" in os.environ:  # this tree run from elsewhere
                platform.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            stop_platform(platform)


# -- 2. the router restarts ---------------------------------------------------------------


@dataclass
class RouterRun:
    event: str
    wrk: WrkResult
    back_seconds: float | None  # until every killed Caddy answered again


def admin(socket_path: Path) -> httpx.Client:
    return httpx.Client(transport=UnixSocketTransport(socket_path), base_url="http://caddy-admin")


def reload_caddy(socket_path: Path) -> None:
    with admin(socket_path) as client:
        config = client.get("/config/").json()
        answer = client.post("/load", json=config, headers={"Cache-Control": "must-revalidate"})
        answer.raise_for_status()


def caddy_pids(platform: RunningPlatform) -> dict[str, int]:
    components = platform.dataplane["components"]
    return {name: int(pid) for name, pid in components.items() if name.startswith("caddy-")}


def router_event(platform: RunningPlatform, event: str) -> Callable[[], float | None]:
    sockets = sorted((platform.data_dir / "run").glob("caddy-*.sock"))
    pids = caddy_pids(platform)
    victims = {"SIGKILL one Caddy": ["caddy-1"], "SIGKILL both Caddies": list(pids)}.get(event, [])
    reloads = {"reload one Caddy": sockets[:1], "reload both Caddies": sockets}.get(event, [])

    def happen() -> float | None:
        started = time.monotonic()
        for name in victims:
            os.kill(pids[name], signal.SIGKILL)
        for socket_path in reloads:
            reload_caddy(socket_path)
        if not victims:
            return None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = caddy_pids(platform)
            if all(now[n] != pids[n] for n in victims) and all(
                answers_admin(platform, n) for n in victims
            ):
                return time.monotonic() - started
            time.sleep(0.01)
        return None

    return happen


def answers_admin(platform: RunningPlatform, name: str) -> bool:
    try:
        with admin(platform.data_dir / "run" / f"{name}.sock") as client:
            return client.get("/config/").status_code == 200
    except httpx.HTTPError:
        return False


def router_runs(runs: int) -> list[RouterRun]:
    found: list[RouterRun] = []
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-router-") as tmp:
        directory = Path(tmp)
        platform, _ = start(Version("this", None), directory)
        try:
            url = ship(platform, directory, "router")
            for n in range(runs):
                for event in EVENTS[n % len(EVENTS) :] + EVENTS[: n % len(EVENTS)]:
                    happen = router_event(platform, event)
                    load = Load(url, ROUTER_SECONDS, threads=2, connections=16)
                    try:
                        time.sleep(KILL_AT)
                        back = happen()
                        result = load.finish()
                    finally:
                        load.kill()
                    print(f"router run {n + 1}: {event}: {result.errors} errors in "
                          f"{result.requests} requests", flush=True)  # fmt: skip
                    found.append(RouterRun(event, result, back))
                    time.sleep(1.0)
        finally:
            stop_platform(platform)
    return found


# -- the report ---------------------------------------------------------------------------


def report(downs: list[Downtime], routers: list[RouterRun], down: float, runs: int,
           previous: str) -> str:  # fmt: skip
    lines = [
        "## The apps while the control plane is down",
        "",
        "Goal: 0 failed requests per minute of control-plane downtime. Two stacks of "
        "`examples/hello` (`dev`, one replica each) on a real platform; `wrk -t1 -c8 "
        "--timeout 5s` on each stage's URL for the whole run; 2 s in, SIGKILL to the "
        f"control plane (`stackyard up`); {down:.0f} s later `stackyard up -d` again; the "
        "load goes on until both stages answer, and 2 s more. Downtime is from the kill "
        f"until `up -d` returned. *Previous* is `{previous}` (before the data plane), run "
        "from its own `src` on the same Python; *this* is this tree.",
        "",
        "| version | run | downtime s | requests | failed (non-2xx + socket errors) "
        "| failed per minute of downtime |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("previous", "this"):
        for n, run in enumerate((r for r in downs if r.version == name), start=1):
            lines.append(f"| {name} | {n} | {run.down_seconds:.1f} | {run.requests} | "
                         f"{run.errors} | {run.per_minute:.0f} |")  # fmt: skip
    lines += [
        "",
        "Before, the router and its upstreams lived and died with the control plane: every "
        "request failed until `up` was back (wrk counts each refused connection attempt, "
        "so the count is bound by how fast it retries, not by a client's patience). Now "
        "the data plane serves alone meanwhile, and the returning control plane adopts it "
        "without changing any route.",
        "",
        "## The router's own restart, next to a plain `caddy reload`",
        "",
        f"`wrk -t2 -c16 -d{ROUTER_SECONDS}s --timeout 5s` on one stage; {KILL_AT:.0f} s in, "
        f'the event. {runs} runs each, interleaved. "Back" is from the kill until the '
        "keeper's new Caddy answers its admin socket (it resumes its saved config, so it "
        "serves every route from then on).",
        "",
        "| event | failed per run (runs) | median failed | median requests | median back s |",
        "|---|---|---|---|---|",
    ]
    for event in EVENTS:
        mine = [r for r in routers if r.event == event]
        if not mine:
            continue
        backs = [r.back_seconds for r in mine if r.back_seconds is not None]
        lines.append(
            f"| {event} | {', '.join(str(r.wrk.errors) for r in mine)} | "
            f"{statistics.median(r.wrk.errors for r in mine):g} | "
            f"{statistics.median(r.wrk.requests for r in mine):g} | "
            + (f"{statistics.median(backs):.2f} |" if backs else "- |")
        )
    lines += [
        "",
        "What fails, and why: a SIGKILLed Caddy takes the requests in flight on its "
        "connections with it; the other Caddy, on the same ports (`SO_REUSEPORT`), answers "
        "every new connection. With both killed (one Caddy alone would be in that state), "
        "every connection attempt is refused until the keeper has started them again. A "
        "reload re-creates Caddy's listeners and closes its idle keep-alive connections, "
        "which races with the requests clients send on them: the cause of the resets "
        "that made deployments switch upstreams over DNS instead of reloading Caddy.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.dataplane --runs {runs} --down {down:g} "
        f"--previous {previous}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--down", type=float, default=20.0, help="seconds the control plane is down"
    )
    parser.add_argument("--downtime-runs", type=int, default=1)
    parser.add_argument("--previous", default="HEAD~1", help="git revision before the data plane")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-prev-") as tmp:
        versions = [
            Version("previous", previous_src(args.previous, Path(tmp))),
            Version("this", None),
        ]
        downs = []
        for n in range(args.downtime_runs):
            for version in versions if n % 2 == 0 else versions[::-1]:
                run = downtime_run(version, args.down)
                print(f"downtime run {n + 1}: {version.name}: {run.errors} failed of "
                      f"{run.requests}, down {run.down_seconds:.1f} s", flush=True)  # fmt: skip
                downs.append(run)
    routers = router_runs(args.runs)
    body = report(downs, routers, args.down, args.runs, args.previous)
    print(body)
    if not args.no_write:
        update_section("dataplane", body)


if __name__ == "__main__":
    main()
