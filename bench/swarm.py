"""Stackyard on a three-node Docker Swarm, side by side with Swarm's own tools, in one run.

The cluster is the test swarm of ``scripts/setup-host --swarm-nodes 3`` (three extra dockerd
on this machine, advertising 127.0.0.2, .3 and .4; n1 the manager). The bench starts it
when it is not there and stops it at the end (``--swarm-nodes 0``: by the pids in its pid
files); a swarm that was already there is left running. One platform (``stackyard up
--engine swarm``, API, registry and Caddy on loopback) serves every part. The images are
``examples/hello`` v1 and v2, built once by the platform and pulled by digest by every node
before the first measurement, so no side of a comparison pays for a pull.

1. **Zero downtime**, 3 replicas on 3 nodes, ``wrk -t2 -c16`` (at most 90 s, stopped 2 s
   after the update returns) against the serving URL while v1 rolls to v2:
   - Stackyard: ``POST …/deployments`` of v2 to a stage of 3 replicas (health every 0.5 s).
   - ``docker service update --image v2 --update-order start-first`` and ``stop-first``:
     a service of 3 replicas with the same image, ``--network host`` (what Stackyard's tasks
     use; the routing mesh needs the engine's iptables, which these daemons run without),
     a HEALTHCHECK (``wget /healthz`` every 1 s), ``--init``, a 3 s grace period, and each
     task binding its node's address (the node's id, from a Swarm template, picks it). A
     Caddy started by the bench (admin off) routes to the three node addresses with the
     same load balancing and retries as Stackyard's routes (round robin, a refused
     connection tried again on another upstream for up to 2 s).
2. **Deploy latency**, 1 replica: from ``POST …/deployments`` to the first of 20
   consecutive answers from v2 on the stage URL; floor: ``docker service create`` of the v2
   image (pinned to a worker, host network) to its first 200 on ``/healthz``.
3. **Control plane cost**: a stage of 50 replicas across the 3 nodes; the ``stackyard up``
   process's resident memory (``/proc/<pid>/status``) once converged, and the API latency
   of the stage's ``tasks`` and ``check`` (20 GETs each, admin token).

Traffic goes to 127.0.0.0/8 only; every service, process and node the bench starts is
stopped at the end (processes by their pid).
Usage (as root: it may start Docker daemons):
    .venv/bin/python -m bench.swarm [--runs 3] [--no-write]
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import RunningPlatform, free_port
from tests.integration.gitrepo import GitRepo
from tests.integration.swarm.cluster import stop_swarm_platform, swarm_platform
from tests.integration.swarm.conftest import NODES, SwarmCluster, answers, setup_host, swarm_node
from tests.integration.wrk import Load, WrkResult

from bench.report import bench_main
from bench.zero_downtime import version_at, wait_version

DOCKER = "/usr/bin/docker"
CADDY = "/usr/bin/caddy"
CONNECTIONS = 16
LOAD_BOUND = 90  # seconds: the most any one load runs
AFTER_UPDATE = 2.0  # seconds of load after the update returned
UPDATE_AFTER = 1.0  # seconds of load before the update starts
STREAK = 20  # consecutive v2 answers that count as "all traffic on v2"
GOAL = 1.0  # seconds over the floor
MANY = 50
API_CALLS = 20
STAGE = """\
stages:
  - name: dev
    replicas: {replicas}
    cpu: {cpu}
    memory: {memory}
    health: {{path: /healthz, interval: {interval}, timeout: 1, retries: 2, start_period: 5}}
    deploy: {{drain_seconds: 1, stop_timeout: 3}}
"""
# A task of the plain Swarm services binds its node's address: NODE is the node's id (a
# Swarm template), ADDRS maps the ids to the addresses.
PICK_HOST = 'for p in $ADDRS; do case "$p" in "$NODE"=*) HOST="${p#*=}";; esac; done; '
SERVE = PICK_HOST + 'exec busybox httpd -f -p "$HOST:$PORT" -h /www'
HEALTH = PICK_HOST + 'wget -q -O /dev/null "http://$HOST:$PORT/healthz"'


# -- the cluster, the platform, the images


@dataclass
class Prepared:
    platform: RunningPlatform
    cluster: SwarmCluster
    directory: Path
    docker_env: dict[str, str]
    images: dict[tuple[str, str], str] = field(default_factory=dict)  # (stack, v) -> ref
    releases: dict[str, dict[str, int]] = field(default_factory=dict)  # stack -> version -> n
    urls: dict[str, str] = field(default_factory=dict)  # stack -> its stage URL
    node_ids: dict[str, str] = field(default_factory=dict)  # n1 -> Swarm node id

    @property
    def addrs(self) -> str:
        return " ".join(
            f"{self.node_ids[name]}={node.address}" for name, node in self.cluster.nodes.items()
        )


def docker(prepared: Prepared, *args: str, check: bool = True, timeout: float = 180) -> str:
    """The Docker CLI against the swarm manager, with the bench's own login."""
    argv = [DOCKER, "-H", prepared.cluster.endpoint, *args]
    result = subprocess.run(argv, env=prepared.docker_env, capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout + result.stderr


def new_stack(prepared: Prepared, name: str, replicas: int, **stage: Any) -> GitRepo:
    settings = {"cpu": 0.1, "memory": "64m", "interval": 0.5, **stage}
    repo = GitRepo.from_example("hello", prepared.directory / name)
    repo.write("stackyard.yml", STAGE.format(replicas=replicas, **settings))
    repo.commit("the bench's stage")
    prepared.platform.cli("stacks", "create", name, "--repo", str(repo.path))
    return repo


def release(prepared: Prepared, stack: str, version: str) -> str:
    platform = prepared.platform
    platform.cli("build", stack, timeout=300)
    record = json.loads(platform.cli("release", stack, "--stage", "dev", "--json").stdout)
    prepared.releases.setdefault(stack, {})[version] = int(record["number"])
    return str(record["digest"])


def deploy(prepared: Prepared, stack: str, version: str) -> dict[str, Any]:
    number = prepared.releases[stack][version]
    found = prepared.platform.cli("deploy", stack, "--stage", "dev", "--release", str(number),
                                  "--json", timeout=900)  # fmt: skip
    record = dict(json.loads(found.stdout))
    if record["status"] != "COMPLETED":
        raise RuntimeError(f"{stack}: deployment of {version} ended {record['status']}")
    return record


def prepare(platform: RunningPlatform, cluster: SwarmCluster, directory: Path) -> Prepared:
    config = directory / "docker-config"
    config.mkdir(mode=0o700)
    prepared = Prepared(platform, cluster, directory, {**os.environ, "DOCKER_CONFIG": str(config)})
    prepared.node_ids = cluster.node_ids()
    # "zd": 3 replicas for the zero-downtime runs; "lat": 1 replica for the latency runs.
    # The same app and the same two versions: the same two digests.
    repos = {"zd": new_stack(prepared, "zd", 3), "lat": new_stack(prepared, "lat", 1)}
    for version in ("v1", "v2"):
        for stack, repo in repos.items():
            if version != "v1":
                repo.set_version(version)
            digest = release(prepared, stack, version)
            prepared.images[stack, version] = f"{platform.registry}/{stack}@{digest}"
            if version == "v1":
                deploy(prepared, stack, "v1")
                url = json.loads(platform.cli("url", stack, "--stage", "dev", "--json").stdout)
                prepared.urls[stack] = str(url["url"]).rstrip("/") + "/"
    creds = json.loads((platform.data_dir / "registry-credentials.json").read_text())
    for name, node in cluster.nodes.items():
        argv = [DOCKER, "-H", node.socket]
        subprocess.run([*argv, "login", platform.registry, "-u", creds["username"],
                        "--password-stdin"], env=prepared.docker_env, input=creds["password"],
                       capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
        for stack in repos:
            for version in ("v1", "v2"):
                image = image_of(prepared, stack, version)
                pulled = subprocess.run([*argv, "pull", image], env=prepared.docker_env,
                                        capture_output=True, text=True, timeout=300)  # fmt: skip
                if pulled.returncode != 0:
                    raise RuntimeError(f"{name} cannot pull {image}: {pulled.stderr.strip()}")
    return prepared


def image_of(prepared: Prepared, stack: str, version: str) -> str:
    return prepared.images[stack, version]


# -- 1. zero downtime


@dataclass
class Run:
    tool: str
    wrk: WrkResult
    update_seconds: float
    outcome: str
    served_after: str


def under_load(url: str, update: Callable[[], str]) -> tuple[WrkResult, float, str]:
    load = Load(url, LOAD_BOUND, connections=CONNECTIONS)
    try:
        time.sleep(UPDATE_AFTER)
        started = time.monotonic()
        outcome = update()
        elapsed = time.monotonic() - started
        time.sleep(AFTER_UPDATE)
        return load.stop(), elapsed, outcome
    finally:
        load.kill()


def stackyard_run(prepared: Prepared) -> Run:
    url = prepared.urls["zd"]
    deploy(prepared, "zd", "v1")
    if wait_version(url, "v1", 30) != "v1":
        raise RuntimeError("zd does not serve v1 before the run")

    def update() -> str:
        found = prepared.platform.cli(
            "deploy", "zd", "--stage", "dev", "--release", str(prepared.releases["zd"]["v2"]),
            "--json", check=False, timeout=300,
        )  # fmt: skip
        if found.returncode != 0:
            return f"deploy failed: {found.stderr.strip()[-200:]}"
        record = json.loads(found.stdout)
        return f"deployment {record['number']} {record['status']}"

    result, elapsed, outcome = under_load(url, update)
    return Run("Stackyard", result, elapsed, outcome, wait_version(url, "v2", 15))


class Router:
    """A Caddy of the bench's own on a free loopback port, in front of the three node
    addresses at ``port``, with the load balancing of Stackyard's routes; stopped by pid."""

    def __init__(self, prepared: Prepared, port: int) -> None:
        self.listen = free_port()
        upstreams = [{"dial": f"{node.address}:{port}"} for node in prepared.cluster.nodes.values()]
        config = {
            "admin": {"disabled": True},
            "apps": {"http": {"servers": {"bench": {
                "listen": [f"127.0.0.1:{self.listen}"],
                "automatic_https": {"disable": True},
                "routes": [{"handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": upstreams,
                    "load_balancing": {
                        "selection_policy": {"policy": "round_robin"},
                        "try_duration": "2s",
                        "try_interval": "100ms",
                    },
                }]}],
            }}}},
        }  # fmt: skip
        path = prepared.directory / f"caddy-{self.listen}.json"
        path.write_text(json.dumps(config))
        self.log = (prepared.directory / f"caddy-{self.listen}.log").open("w")
        self.process = subprocess.Popen(
            [CADDY, "run", "--config", str(path)], stdout=self.log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.listen}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def swarm_run(prepared: Prepared, order: str) -> Run:
    name = f"sy-bench-{secrets.token_hex(3)}"
    port = free_port()
    router = Router(prepared, port)
    try:
        docker(prepared, "service", "create", "--detach", "--name", name, "--replicas", "3",
               "--network", "host", "--init", "--stop-grace-period", "3s",
               "--with-registry-auth", "--no-resolve-image",
               "--env", f"PORT={port}", "--env", "NODE={{.Node.ID}}",
               "--env", f"ADDRS={prepared.addrs}",
               "--health-cmd", HEALTH, "--health-interval", "1s", "--health-timeout", "1s",
               "--health-retries", "2", "--health-start-period", "5s",
               "--update-order", order, "--update-parallelism", "1",
               image_of(prepared, "zd", "v1"), "sh", "-c", SERVE)  # fmt: skip
        deadline = time.monotonic() + 90
        while docker(prepared, "service", "ls", "--filter", f"name={name}", "--format",
                     "{{.Replicas}}").strip() != "3/3":  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: 3 replicas did not run within 90 s")
            time.sleep(0.5)
        if wait_version(router.url, "v1", 30) != "v1":
            raise RuntimeError(f"{name} does not serve v1 through the bench's router")

        def update() -> str:
            done = subprocess.run(
                [DOCKER, "-H", prepared.cluster.endpoint, "service", "update", "--detach=false",
                 "--image", image_of(prepared, "zd", "v2"), "--no-resolve-image",
                 "--with-registry-auth", name],
                env=prepared.docker_env, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            status = docker(prepared, "service", "inspect", "--format",
                            "{{json .UpdateStatus}}", name, check=False).strip()  # fmt: skip
            state = (json.loads(status) or {}).get("State", "?") if status.startswith("{") else "?"
            errors = docker(prepared, "service", "ps", "--no-trunc", "--format", "{{.Error}}",
                            name, check=False).splitlines()  # fmt: skip
            said = sorted({e.strip() for e in errors if e.strip()})
            if said:  # what the failed task's app said
                logged = docker(prepared, "service", "logs", "--raw", "--tail", "20", name,
                                check=False).splitlines()  # fmt: skip
                said += sorted({ln.strip() for ln in logged if "bind" in ln or "in use" in ln})
            text = f"exit {done.returncode}, update {state}"
            return text + (f", task errors: {'; '.join(said)}" if said else "")

        result, elapsed, outcome = under_load(router.url, update)
        served = wait_version(router.url, "v2", 15)
        return Run(f"Swarm {order} (HEALTHCHECK)", result, elapsed, outcome, served)
    finally:
        docker(prepared, "service", "rm", name, check=False)
        router.stop()
        wait_port_free(prepared, port)


def wait_port_free(prepared: Prepared, port: int, timeout: float = 30) -> None:
    """A removed service's containers stop asynchronously: wait until none answers."""
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            answering = 0
            for node in prepared.cluster.nodes.values():
                try:
                    client.get(f"http://{node.address}:{port}/healthz", timeout=1)
                    answering += 1
                except httpx.HTTPError:
                    pass
            if not answering:
                return
            time.sleep(0.5)


# -- 2. deploy latency


def stackyard_latency(prepared: Prepared, api: httpx.Client) -> tuple[float, float]:
    """(seconds to the first of STREAK consecutive v2 answers, to the first v2 answer)."""
    deploy(prepared, "lat", "v1")
    url = prepared.urls["lat"]
    if wait_version(url, "v1", 30) != "v1":
        raise RuntimeError("lat does not serve v1 before the run")
    path = "/api/v1/stacks/lat/stages/dev/deployments"
    started = time.perf_counter()
    response = api.post(path, json={"release": prepared.releases["lat"]["v2"]})
    response.raise_for_status()
    first: float | None = None
    streak_start = started
    streak = 0
    while streak < STREAK:
        if time.perf_counter() > started + 120:
            raise RuntimeError("v2 did not take all traffic within 120 s")
        at = time.perf_counter()
        if version_at(url) == "v2":
            first = at if first is None else first
            streak_start = at if streak == 0 else streak_start
            streak += 1
        else:
            streak = 0
        time.sleep(0.005)
    number = response.json()["number"]
    record = api.get(f"{path}/{number}").json()
    while record["status"] in ("QUEUED", "IN_PROGRESS"):
        time.sleep(0.2)
        record = api.get(f"{path}/{number}").json()
    if record["status"] != "COMPLETED":
        raise RuntimeError(f"lat deployment {number} ended {record['status']}")
    return streak_start - started, (first or streak_start) - started


def floor_latency(prepared: Prepared) -> float:
    """``docker service create`` of the v2 image on a worker to its first 200."""
    port = free_port()
    name = f"sy-bench-floor-{port}"
    node = prepared.cluster.nodes["n2"]
    url = f"http://{node.address}:{port}/healthz"
    started = time.perf_counter()
    try:
        docker(prepared, "service", "create", "--detach", "--name", name, "--network", "host",
               "--init", "--with-registry-auth", "--no-resolve-image", "--restart-condition",
               "none", "--constraint", f"node.id=={prepared.node_ids['n2']}",
               "--env", f"PORT={port}", "--env", f"HOST={node.address}",
               image_of(prepared, "lat", "v2"))  # fmt: skip
        with httpx.Client() as client:
            while True:
                try:
                    if client.get(url, timeout=1).status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                if time.perf_counter() > started + 120:
                    raise RuntimeError(f"{name} did not answer within 120 s")
                time.sleep(0.01)
    finally:
        docker(prepared, "service", "rm", name, check=False)
        wait_port_free(prepared, port)


# -- 3. control plane cost


@dataclass
class Cost:
    tasks: int
    per_node: dict[str, int]
    deploy_seconds: float
    rss_before_mb: float  # with the bench's other stages only (4 tasks)
    rss_mb: float
    threads: int
    tasks_ms: list[float]
    check_ms: list[float]


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def cost(prepared: Prepared, api: httpx.Client) -> Cost:
    before = proc_status(prepared.platform.pid)
    new_stack(prepared, "many", MANY, cpu=0.02, memory="32m", interval=2)
    release(prepared, "many", "v1")
    started = time.monotonic()
    deploy(prepared, "many", "v1")
    deployed = time.monotonic() - started
    deadline = time.monotonic() + 300
    while True:
        state = api.get("/api/v1/stacks/many/stages/dev/check").json()
        if state["converged"] and len(state["tasks"]) == MANY:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("50 tasks did not converge within 300 s")
        time.sleep(1)
    time.sleep(10)  # settle: the probes and the watch as they run from now on
    names = {v: k for k, v in prepared.node_ids.items()}
    listed = api.get("/api/v1/stacks/many/stages/dev/tasks").json()["tasks"]
    per_node: dict[str, int] = {}
    for task in listed:
        where = names.get(task.get("node", ""), "?")
        per_node[where] = per_node.get(where, 0) + 1
    status = proc_status(prepared.platform.pid)
    timings: dict[str, list[float]] = {"tasks": [], "check": []}
    for _ in range(API_CALLS):
        for what in timings:
            at = time.perf_counter()
            api.get(f"/api/v1/stacks/many/stages/dev/{what}").raise_for_status()
            timings[what].append(1000 * (time.perf_counter() - at))
    return Cost(
        tasks=len(listed),
        per_node=dict(sorted(per_node.items())),
        deploy_seconds=deployed,
        rss_before_mb=int(before["VmRSS"].split()[0]) / 1024,
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        threads=int(status["Threads"]),
        tasks_ms=timings["tasks"],
        check_ms=timings["check"],
    )


# -- the benchmark


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    stackyard_latency: list[tuple[float, float]] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    cost: Cost | None = None


@contextlib.contextmanager
def bench_platform(prefix: str) -> Iterator[tuple[RunningPlatform, SwarmCluster, Path]]:
    """The test swarm (started if it is not there, and then stopped at the end) and one
    platform on it, in a temporary directory: (platform, cluster, directory)."""
    started_swarm = not answers(swarm_node(1))
    setup_host(NODES)
    cluster = SwarmCluster({f"n{n}": swarm_node(n) for n in range(1, NODES + 1)})
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            directory = Path(tmp)
            platform = swarm_platform(directory / "data", cluster)
            try:
                yield platform, cluster, directory
            finally:
                stop_swarm_platform(platform, cluster)
    finally:
        if started_swarm:
            setup_host(0)


def measure(runs: int) -> Results:
    results = Results()
    with bench_platform("stackyard-bench-swarm-") as (platform, cluster, directory):
        prepared = prepare(platform, cluster, directory)
        auth = {"Authorization": f"Bearer {platform.token}"}
        with httpx.Client(base_url=platform.api_url, timeout=60, headers=auth) as api:
            for _ in range(runs):
                results.runs.append(stackyard_run(prepared))
                results.runs.append(swarm_run(prepared, "start-first"))
                results.runs.append(swarm_run(prepared, "stop-first"))
            for n in range(runs):  # interleaved; the side that goes first alternates
                if n % 2:
                    results.floor.append(floor_latency(prepared))
                results.stackyard_latency.append(stackyard_latency(prepared, api))
                if not n % 2:
                    results.floor.append(floor_latency(prepared))
            results.cost = cost(prepared, api)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: int, results: Results) -> str:
    lines = [
        "## Swarm: Stackyard against Swarm's own rolling update, deploy latency, cost",
        "",
        "`bench/swarm.py` on the three-node test swarm of `scripts/setup-host --swarm-nodes 3`",
        "(three dockerd on this 2-core machine, 127.0.0.2-.4), one platform with `--engine",
        "swarm`, the images of `examples/hello` already on every node. All parts in one run.",
        "",
        f"**Zero downtime**: v1 → v2 of 3 replicas on 3 nodes under `wrk -t2 -c{CONNECTIONS}`",
        f"({runs} run(s) each, interleaved). The plain Swarm services use host networking",
        "(as Stackyard's tasks do; the routing mesh needs iptables, which these daemons run",
        "without), a HEALTHCHECK, and a Caddy in front with the load balancing and retries of",
        "Stackyard's routes.",
        "",
        "| tool | requests | failed (non-2xx + socket errors) | update took | outcome "
        "| serves after |",
        "|---|---|---|---|---|---|",
    ]
    for run in results.runs:
        wrk = run.wrk
        failed = f"{wrk.errors} ({wrk.non2xx} non-2xx, connect {wrk.connect}, read {wrk.read},"
        failed += f" timeout {wrk.timeout})"
        lines.append(
            f"| {run.tool} | {wrk.requests:,} | {failed} | {run.update_seconds:.1f} s "
            f"| {run.outcome} | {run.served_after} |"
        )
    sy = [s for s, _first in results.stackyard_latency]
    first = [f for _s, f in results.stackyard_latency]
    over = median(sy) - median(results.floor)
    lines += [
        "",
        f"**Deploy latency**, 1 replica ({runs} run(s) each, median; the goal is the floor"
        f" plus at most {GOAL:.0f} s):",
        "",
        "| | median | runs |",
        "|---|---|---|",
        f"| Stackyard: POST → first of {STREAK} consecutive v2 answers | {median(sy):.2f} s "
        f"| {', '.join(f'{v:.2f}' for v in sy)} |",
        f"| Stackyard: POST → first v2 answer | {median(first):.2f} s "
        f"| {', '.join(f'{v:.2f}' for v in first)} |",
        "| floor: `docker service create` → first 200 on /healthz | "
        f"{median(results.floor):.2f} s | {', '.join(f'{v:.2f}' for v in results.floor)} |",
        "",
        f"Stackyard over the floor: {over:+.2f} s ({'meets' if over <= GOAL else 'misses'}"
        f" the goal of +{GOAL:.0f} s).",
    ]
    if results.cost is not None:
        c = results.cost
        spread = ", ".join(f"{k}: {v}" for k, v in c.per_node.items())
        lines += [
            "",
            f"**Control plane cost** with {c.tasks} tasks of one stage on 3 nodes ({spread};"
            f" deployed in {c.deploy_seconds:.0f} s, health every 2 s):",
            "",
            "| | value |",
            "|---|---|",
            f"| `stackyard up` resident memory (RSS) | {c.rss_mb:.0f} MB ({c.threads} threads) |",
            f"| the same before the 50 tasks (4 tasks) | {c.rss_before_mb:.0f} MB |",
            f"| API `GET …/tasks`, {API_CALLS} calls: median / max | {median(c.tasks_ms):.0f} ms"
            f" / {max(c.tasks_ms):.0f} ms |",
            f"| API `GET …/check`, {API_CALLS} calls: median / max | {median(c.check_ms):.0f} ms"
            f" / {max(c.check_ms):.0f} ms |",
        ]
    lines += ["", f"Reproduce (as root): `.venv/bin/python -m bench.swarm --runs {runs}`"]
    return "\n".join(lines)


def main() -> None:
    bench_main("swarm", __doc__, measure, report, runs=3)


if __name__ == "__main__":
    main()
