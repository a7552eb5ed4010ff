"""Zero downtime under load: Stackyard's rolling deployment against docker-compose and Swarm.

One bounded wrk load (``wrk -t2 -c32 -d10s --timeout 5s``) runs against the serving URL while
the app rolls from v1 to v2; the update starts about 1 s into the load. The same two images of
``examples/hello`` (built once through Stackyard, then pulled by digest from its registry) are
used by every tool:

- **Stackyard**: a real platform (API, registry, Caddy) on loopback, a stack with
  ``replicas: 2`` and a ``/healthz`` check; ``stackyard deploy --release <v2>``.
- **docker-compose**: Debian's docker-compose (v1), one service with ``network_mode: host``
  and ``init: true`` on a fixed port (with host networking two containers cannot share the
  port), then ``up -d --force-recreate`` with the v2 image.
- **Swarm start-first**: ``docker service create --network host --replicas 1`` and then
  ``docker service update --image <v2> --update-order start-first``; on a single node with
  host networking the new task cannot bind the port while the old one holds it.
- **Swarm stop-first**: the same with Swarm's default update order, for reference.

Then a bad release: a v3 without ``/healthz`` is deployed through Stackyard under the same
load; it must fail, roll back to v2, and fail no request.
Usage:
    .venv/bin/python -m bench.zero_downtime [--runs 3] [--no-write] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import RunningPlatform, free_port, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo
from tests.integration.wrk import Load, WrkResult

from bench.report import update_section

DOCKER = "/usr/bin/docker"
COMPOSE = "/usr/bin/docker-compose"
STACK = "zd"
DURATION = 10  # seconds of wrk load per run
BAD_DURATION = 20  # the bad release takes longer: three failed tasks, then the rollback
UPDATE_AFTER = 1.0  # seconds into the load when the update starts
CONNECTIONS = 32
STACKYARD_YML = """\
stages:
  - name: dev
    replicas: 2
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 1, stop_timeout: 3}
"""
NEVER_HEALTHY = "FROM busybox:latest\nCOPY www /www\nRUN rm /www/healthz\n" + (
    'CMD ["sh", "-c", "exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]\n'
)
COMPOSE_YML = """\
version: "2.4"
services:
  web:
    image: {image}
    network_mode: host
    init: true
    stop_grace_period: 3s
    environment:
      PORT: "{port}"
      HOST: 127.0.0.1
"""
CONTROL = "Stackyard, no deployment (control)"
COMPOSE_TOOL = "docker-compose --force-recreate"
TOOLS = (
    CONTROL,
    "Stackyard",
    "docker-compose --force-recreate",
    "Swarm start-first",
    "Swarm stop-first",
)


# -- wrk


def wrk_load(url: str, seconds: int = DURATION) -> Load:
    return Load(url, seconds, connections=CONNECTIONS)


# -- helpers


@dataclass
class Run:
    tool: str
    wrk: WrkResult
    update_seconds: float
    outcome: str
    served_after: str


def version_at(url: str) -> str:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError as exc:
        return type(exc).__name__
    found = re.search(r"VERSION=(\w+)", text)
    return found[1] if found else text[:40]


def wait_version(url: str, version: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = version_at(url)
    while seen != version and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = version_at(url)
    return seen


def docker(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result


def under_load(url: str, update: Callable[[], str], seconds: int = DURATION) -> tuple:
    """Run the load, start ``update`` ~1 s in; the wrk result, the update's seconds and outcome."""
    load = wrk_load(url, seconds)
    try:
        time.sleep(UPDATE_AFTER)
        started = time.monotonic()
        outcome = update()
        elapsed = time.monotonic() - started
        return load.finish(), elapsed, outcome
    finally:
        load.kill()


# -- Stackyard


@dataclass
class Shipped:
    platform: RunningPlatform
    url: str
    releases: dict[str, int] = field(default_factory=dict)  # v1, v2, v3 -> release number
    digests: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # v1, v2 -> registry/zd@sha256:…
    logs: list[str] = field(default_factory=list)


def build_and_release(platform: RunningPlatform, version: str, shipped: Shipped) -> None:
    platform.cli("build", STACK, timeout=300)
    record = json.loads(platform.cli("release", STACK, "--stage", "dev", "--json").stdout)
    shipped.releases[version] = record["number"]
    shipped.digests[version] = record["digest"]
    shipped.images[version] = f"{platform.registry}/{STACK}@{record['digest']}"


def deploy(platform: RunningPlatform, release: int, check: bool = True) -> dict[str, Any]:
    result = platform.cli("deploy", STACK, "--stage", "dev", "--release", str(release), "--json",
                          check=check, timeout=300)  # fmt: skip
    listing = json.loads(platform.cli("deployments", STACK, "--stage", "dev", "--json").stdout)
    if result.returncode == 0:
        return dict(json.loads(result.stdout))
    # --json prints nothing on failure: the newest deployment that is not the rollback
    return next(d for d in listing if d["release_number"] == release)


def prepare(platform: RunningPlatform, directory: Path, docker_env: dict[str, str]) -> Shipped:
    repo = GitRepo.from_example("hello", directory / "repo")
    repo.write("stackyard.yml", STACKYARD_YML)
    repo.commit("two replicas, fast health checks")
    platform.cli("stacks", "create", STACK, "--repo", str(repo.path))
    shipped = Shipped(platform, "")
    build_and_release(platform, "v1", shipped)
    deploy(platform, shipped.releases["v1"])
    shipped.url = json.loads(platform.cli("url", STACK, "--stage", "dev", "--json").stdout)["url"]
    shipped.url = shipped.url.rstrip("/") + "/"
    repo.set_version("v2")
    build_and_release(platform, "v2", shipped)
    repo.write("Dockerfile", NEVER_HEALTHY)
    repo.set_version("v3")
    build_and_release(platform, "v3", shipped)
    creds = json.loads((platform.data_dir / "registry-credentials.json").read_text())
    subprocess.run([DOCKER, "login", platform.registry, "-u", creds["username"],
                    "--password-stdin"], env=docker_env, input=creds["password"],
                   capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    for version in ("v1", "v2"):
        docker("pull", shipped.images[version], env=docker_env, timeout=300)
    return shipped


def stackyard_run(shipped: Shipped) -> Run:
    platform = shipped.platform
    if version_at(shipped.url) != "v1":
        deploy(platform, shipped.releases["v1"])
    if wait_version(shipped.url, "v1", 20) != "v1":
        raise RuntimeError("the stage does not serve v1 before the run")
    record: dict[str, Any] = {}

    def update() -> str:
        record.update(deploy(platform, shipped.releases["v2"], check=False))
        return f"deployment {record['number']} {record['status']}"

    result, elapsed, outcome = under_load(shipped.url, update)
    shipped.logs.append(record.get("log_path", ""))
    return Run("Stackyard", result, elapsed, outcome, wait_version(shipped.url, "v2", 15))


def control_run(shipped: Shipped) -> Run:
    """The same load on the stage with nothing changing: Caddy's own cost and latency."""
    if wait_version(shipped.url, "v2", 5) not in ("v1", "v2"):
        raise RuntimeError("the stage does not answer before the control run")
    result, elapsed, outcome = under_load(shipped.url, lambda: "no deployment")
    return Run(CONTROL, result, elapsed, outcome, version_at(shipped.url))


@dataclass
class BadRelease:
    wrk: WrkResult
    status: str
    reason: str
    rollback: str
    check_digest: str
    converged: bool
    good_digest: str
    log_path: str


def bad_release_run(shipped: Shipped) -> BadRelease:
    platform = shipped.platform
    if version_at(shipped.url) != "v2":
        deploy(platform, shipped.releases["v2"])
    record: dict[str, Any] = {}

    def update() -> str:
        record.update(deploy(platform, shipped.releases["v3"], check=False))
        return str(record["status"])

    result, _elapsed, _outcome = under_load(shipped.url, update, BAD_DURATION)
    deadline = time.monotonic() + 60
    state = json.loads(platform.cli("check", STACK, "--stage", "dev", "--json").stdout)
    while not state["converged"] and time.monotonic() < deadline:
        time.sleep(0.5)
        state = json.loads(platform.cli("check", STACK, "--stage", "dev", "--json").stdout)
    listing = json.loads(platform.cli("deployments", STACK, "--stage", "dev", "--json").stdout)
    newest = listing[0]
    return BadRelease(
        wrk=result,
        status=record["status"],
        reason=record["reason"],
        rollback=f"deployment {newest['number']} ({newest['trigger']}) {newest['status']}",
        check_digest=state["digest"],
        converged=state["converged"]
        and all(t["digest"] == shipped.digests["v2"] for t in state["tasks"]),
        good_digest=shipped.digests["v2"],
        log_path=record["log_path"],
    )


# -- docker-compose


def compose_run(shipped: Shipped, directory: Path, docker_env: dict[str, str]) -> Run:
    project = f"syzd{secrets.token_hex(3)}"
    folder = directory / project
    folder.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    yml = folder / "docker-compose.yml"

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([COMPOSE, "-p", project, *args], cwd=folder, env=docker_env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    try:
        yml.write_text(COMPOSE_YML.format(image=shipped.images["v1"], port=port))
        started = compose("up", "-d")
        if started.returncode != 0:
            raise RuntimeError(f"docker-compose up failed: {started.stderr}")
        if wait_version(url, "v1", 30) != "v1":
            raise RuntimeError("the compose service does not serve v1")

        def update() -> str:
            yml.write_text(COMPOSE_YML.format(image=shipped.images["v2"], port=port))
            done = compose("up", "-d", "--force-recreate")
            return f"exit {done.returncode}"

        result, elapsed, outcome = under_load(url, update)
        return Run(COMPOSE_TOOL, result, elapsed, outcome, wait_version(url, "v2", 15))
    finally:
        compose("down", "--timeout", "3")


# -- Swarm


class Swarm:
    """Use the engine's swarm; initialise it (and leave it afterwards) only if it has none."""

    def __init__(self) -> None:
        self.joined_by_us = False
        self.had_gwbridge = False
        self.problem = ""

    def __enter__(self) -> Swarm:
        state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        if state == "active":
            control = docker("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip()
            if control != "true":
                self.problem = "the engine is a swarm worker, not a manager"
            return self
        if state != "inactive":
            self.problem = f"swarm state is {state!r}"
            return self
        self.had_gwbridge = "docker_gwbridge" in docker("network", "ls", "--format",
                                                        "{{.Name}}").stdout.split()  # fmt: skip
        init = docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=False, timeout=60)
        if init.returncode != 0:
            self.problem = f"docker swarm init failed: {init.stderr.strip()}"
        else:
            self.joined_by_us = True
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.joined_by_us:
            return
        docker("swarm", "leave", "--force", check=False, timeout=60)
        if not self.had_gwbridge:
            for _ in range(10):  # the bridge that swarm init created, once its endpoints are gone
                if docker("network", "rm", "docker_gwbridge", check=False).returncode == 0:
                    break
                time.sleep(1)


def swarm_run(shipped: Shipped, order: str, docker_env: dict[str, str]) -> Run:
    name = f"syzd-{secrets.token_hex(3)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    try:
        docker("service", "create", "--detach", "--name", name, "--network", "host",
               "--replicas", "1", "--init", "--stop-grace-period", "3s", "--update-order", order,
               "--no-resolve-image", "--with-registry-auth", "-e", f"PORT={port}",
               "-e", "HOST=127.0.0.1", shipped.images["v1"], env=docker_env)  # fmt: skip
        if wait_version(url, "v1", 60) != "v1":
            raise RuntimeError("the swarm service does not serve v1")
        time.sleep(1)  # let swarm see the task as running before the update

        def update() -> str:
            done = docker("service", "update", "--detach=false", "--image", shipped.images["v2"],
                          "--no-resolve-image", "--with-registry-auth", "--update-order", order,
                          name, env=docker_env, check=False, timeout=60)  # fmt: skip
            status = docker("service", "inspect", "--format", "{{json .UpdateStatus}}", name,
                            check=False).stdout.strip()  # fmt: skip
            state = (json.loads(status) or {}).get("State", "?") if status.startswith("{") else "?"
            failed = docker("service", "ps", "--no-trunc", "--format", "{{.Error}}", name,
                            check=False).stdout.split("\n")  # fmt: skip
            errors = sorted({e.strip() for e in failed if e.strip()})
            if errors:  # what the failed task said
                said = docker("service", "logs", "--raw", "--tail", "20", name, check=False)
                errors += sorted({ln.strip() for ln in (said.stdout + said.stderr).splitlines()
                                  if "bind" in ln or "in use" in ln})  # fmt: skip
            text = f"exit {done.returncode}, update {state}"
            return text + (f", task errors: {'; '.join(errors)}" if errors else "")

        result, elapsed, outcome = under_load(url, update)
        return Run(f"Swarm {order}", result, elapsed, outcome, wait_version(url, "v2", 15))
    finally:
        docker("service", "rm", name, check=False)
        deadline = time.monotonic() + 30  # its containers go away asynchronously
        while (
            time.monotonic() < deadline
            and docker(
                "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}", check=False
            ).stdout.strip()
        ):
            time.sleep(0.5)


# -- the benchmark


def keep_logs(paths: list[str]) -> list[str]:
    """Copy the deployment logs out of the temporary data dir, as evidence for later."""
    kept = Path(tempfile.mkdtemp(prefix="stackyard-bench-zd-logs-"))
    copies = []
    for n, path in enumerate(paths, start=1):
        if path and Path(path).exists():
            copy = kept / f"{n:02d}-{Path(path).name}"
            shutil.copyfile(path, copy)
            copies.append(str(copy))
    return copies


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    bad: list[BadRelease] = field(default_factory=list)
    swarm_problem: str = ""
    logs: list[str] = field(default_factory=list)


def measure(runs: int) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-zd-") as tmp:
        directory = Path(tmp)
        config = directory / "docker-config"
        config.mkdir(mode=0o700)
        docker_env = {**os.environ, "DOCKER_CONFIG": str(config)}
        platform = start_platform(directory / "data")
        try:
            shipped = prepare(platform, directory, docker_env)
            with Swarm() as swarm:
                results.swarm_problem = swarm.problem
                sides: list[Callable[[], Run]] = [
                    lambda: control_run(shipped),
                    lambda: stackyard_run(shipped),
                    lambda: compose_run(shipped, directory, docker_env),
                ]
                if not swarm.problem:
                    sides += [
                        lambda: swarm_run(shipped, "start-first", docker_env),
                        lambda: swarm_run(shipped, "stop-first", docker_env),
                    ]
                for i in range(runs):
                    for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
                        run = side()
                        print(f"run {i + 1}: {run.tool}: {run.wrk.errors} errors in "
                              f"{run.wrk.requests} requests; {run.outcome}; serves "
                              f"{run.served_after}", flush=True)  # fmt: skip
                        results.runs.append(run)
            for i in range(runs):
                bad = bad_release_run(shipped)
                print(f"bad release {i + 1}: {bad.status}, {bad.wrk.errors} errors in "
                      f"{bad.wrk.requests} requests; {bad.rollback}", flush=True)  # fmt: skip
                results.bad.append(bad)
            results.logs = keep_logs(shipped.logs + [b.log_path for b in results.bad])
        finally:
            subprocess.run([DOCKER, "logout", platform.registry], env=docker_env,
                           capture_output=True, timeout=60)  # fmt: skip
            stop_platform(platform)
    return results


def summary(runs: list[Run]) -> dict[str, dict[str, Any]]:
    by_tool: dict[str, dict[str, Any]] = {}
    for tool in TOOLS:
        mine = [r for r in runs if r.tool == tool]
        if mine:
            by_tool[tool] = {
                "errors": [r.wrk.errors for r in mine],
                "per_1000": [r.wrk.per_1000 for r in mine],
                "on_v2": sum(1 for r in mine if r.served_after == "v2"),
            }
    return by_tool


def report(runs: int, results: Results) -> str:
    lines = [
        "## Zero downtime under load",
        "",
        f"Goal: 0 failed requests while a stage rolls from v1 to v2. `wrk -t2 -c{CONNECTIONS} "
        f"-d{DURATION}s --timeout 5s` runs against the serving URL; the update starts "
        f"{UPDATE_AFTER:.0f} s into the load. {runs} runs per tool, interleaved (the tool "
        "that goes first rotates). All tools run the same two images of `examples/hello` "
        "(busybox httpd), built once through Stackyard and pulled by digest from its "
        "registry; every container runs with host networking on a loopback port and `--init`.",
        "",
        "- **Stackyard**: a real platform (API, registry, Caddy) on loopback; `replicas: 2`, "
        "health check `GET /healthz` (interval 0.5 s, start period 2 s), drain 1 s; "
        "`stackyard deploy zd --stage dev --release <v2> --json`, load sent to the stage URL "
        "(Caddy).",
        "- **docker-compose --force-recreate**: Debian's docker-compose 1.29.2 (compose file "
        "2.4), one service with `network_mode: host`, `init: true` on a fixed port; the image "
        "in the yml is changed to v2, then `docker-compose -p P up -d --force-recreate`. With "
        "host networking two replicas cannot share the port, so it runs one container: compose "
        "stops the old container, then creates and starts the new one.",
        "- **Swarm start-first**: `docker swarm init --advertise-addr 127.0.0.1` on the same "
        "engine, `docker service create --network host --replicas 1 --init` and then `docker "
        "service update --image <v2> --update-order start-first`. Services must use the host "
        "network here (the engine runs with `--bridge=none`, no routing mesh), and on one node "
        "the new task cannot bind the port the old one holds.",
        "- **Swarm stop-first**: the same with Swarm's default update order, for reference.",
        f"- **{CONTROL}**: the same load on the Stackyard stage while nothing changes, to "
        "show what the Caddy hop alone costs in throughput and tail latency on this 2-core "
        "machine (wrk, Caddy and the busybox tasks share it).",
        "",
    ]
    if results.swarm_problem:
        lines += [f"Swarm was not measured: {results.swarm_problem}.", ""]
    lines += [
        "| tool | run | requests | non-2xx | socket errors (connect / read / write / timeout) "
        "| errors per 1000 requests | max latency | update took s | outcome | serves after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tool in TOOLS:
        for n, run in enumerate((r for r in results.runs if r.tool == tool), start=1):
            w = run.wrk
            lines.append(
                f"| {tool} | {n} | {w.requests} | {w.non2xx} | {w.socket_errors} ({w.connect} / "
                f"{w.read} / {w.write} / {w.timeout}) | {w.per_1000:.2f} | {w.latency_max} | "
                f"{run.update_seconds:.1f} | {run.outcome} | {run.served_after} |"
            )
    lines += ["", "| tool | median errors per run | median errors per 1000 requests "
              "| runs that ended serving v2 |", "|---|---|---|---|"]  # fmt: skip
    for tool, values in summary(results.runs).items():
        mine = [r for r in results.runs if r.tool == tool]
        on_v2 = sum(1 for r in mine if r.served_after == "v2")
        lines.append(
            f"| {tool} | {statistics.median(values['errors']):g} | "
            f"{statistics.median(values['per_1000']):.2f} | "
            + ("- |" if tool == CONTROL else f"{on_v2} of {len(mine)} |")
        )
    lines += [
        "",
        "What the baselines did: compose's `--force-recreate` stops the only container, then "
        "creates and starts the new one; wrk's connections are refused during that gap "
        "(wrk counts them as write errors). Swarm start-first with host networking cannot "
        "start the new task while the old one holds the port: the new task exits with "
        "`httpd: bind: Address already in use`, `docker service update` exits 1 and the "
        "update is `paused`. Then either nothing changes (0 errors, but v2 is not "
        "deployed), or the orchestrator replaces the slot by stopping v1 and starting v2 "
        "(v2 served after a gap with thousands of failed requests); both happened here. "
        "Swarm stop-first completes, with a gap like compose's. Requests through "
        "Stackyard are fewer because they take an extra hop through Caddy on the same two "
        "cores; the control row shows the same throughput and the same ~2 s maximum "
        "latency with no deployment at all, so neither comes from the rollout.",
    ]
    if results.bad:
        lines += [
            "",
            "### Bad release under load",
            "",
            "A v3 whose image has no `/healthz` (`RUN rm /www/healthz`) is deployed through "
            f"Stackyard while `wrk` runs for {BAD_DURATION} s against the stage serving v2 "
            "(2 replicas). Goal: the deployment is FAILED by the circuit breaker, the stage "
            "goes back to v2, and no request fails.",
            "",
            "| run | requests | non-2xx | socket errors | rollout state | rollback | `check` "
            "digest is v2 | converged on v2 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, bad in enumerate(results.bad, start=1):
            w = bad.wrk
            lines.append(
                f"| {n} | {w.requests} | {w.non2xx} | {w.socket_errors} | {bad.status} | "
                f"{bad.rollback} | {bad.check_digest == bad.good_digest} | {bad.converged} |"
            )
        lines += ["", f"Reason recorded (last run): `{results.bad[-1].reason[:300]}`"]
    lines += ["", f"Reproduce: `.venv/bin/python -m bench.zero_downtime --runs {runs}`"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--chart", action="store_true", help="draw docs/images/zero-downtime.png")
    args = parser.parse_args()
    results = measure(args.runs)
    body = report(args.runs, results)
    print(body)
    for run in results.runs:
        if run.wrk.errors:
            print(f"\n--- wrk output, {run.tool} ---\n{run.wrk.raw}")
    print("\ndeployment logs:", *results.logs, sep="\n  ")
    if args.json:
        raw = {"runs": [asdict(r) for r in results.runs], "bad": [asdict(b) for b in results.bad]}
        args.json.write_text(json.dumps(raw, indent=1))
    if args.chart:
        from bench.chart import zero_downtime_chart

        zero_downtime_chart(summary(results.runs))
    if not args.no_write:
        update_section("zero_downtime", body)


if __name__ == "__main__":
    main()
