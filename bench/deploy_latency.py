"""Deploy latency: from the deploy API call to all traffic on the new version, against the floor.

(a) **Stackyard**: a real platform on loopback, a stack of ``examples/hello`` with one replica
and fast health settings, v1 deployed and v2 released. The clock starts just before the
``POST /api/v1/stacks/<s>/stages/dev/deployments`` call (httpx, admin token) and stops at
the first of 20 consecutive answers from the stage URL that all show ``VERSION=v2``.
(b) **floor**: ``docker run -d --init --network host -e PORT -e HOST <v2 image by digest,
already pulled>``, then ``GET /healthz`` every 10 ms until it answers 200: the time from the
run command to the first 200 (the container start plus the first passing health check).
Runs are interleaved; the side that goes first alternates.
Usage:
    .venv/bin/python -m bench.deploy_latency [--runs 5] [--no-write]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import RunningPlatform, free_port, start_platform, stop_platform
from tests.integration.gitrepo import GitRepo

from bench.report import bench_main

DOCKER = "/usr/bin/docker"
STACK = "lat"
GOAL = 1.0  # seconds over the floor, for one replica
STREAK = 20  # consecutive v2 answers that count as "all traffic on v2"
POLL_PAUSE = 0.005
HEALTH_POLL = 0.010
STACKYARD_YML = """\
stages:
  - name: dev
    replicas: 1
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 1, stop_timeout: 3}
"""
LOG_LINE = re.compile(r"^(?P<stamp>\S+Z) \[[^\]]+\] (?P<text>.*)$")


@dataclass
class StackyardRun:
    seconds: float  # POST to the first of STREAK consecutive v2 answers
    first_v2: float  # POST to the first v2 answer
    completed: float  # POST to the deployment's finished_at (includes the drain)
    marks: dict[str, float] = field(default_factory=dict)  # log events, seconds after POST


@dataclass
class Results:
    stackyard: list[StackyardRun] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)


@dataclass
class Prepared:
    platform: RunningPlatform
    url: str
    releases: dict[str, int]
    image_v2: str


def version_of(text: str) -> str:
    found = re.search(r"VERSION=(\w+)", text)
    return found[1] if found else ""


def deploy_cli(platform: RunningPlatform, release: int) -> dict[str, Any]:
    result = platform.cli("deploy", STACK, "--stage", "dev", "--release", str(release), "--json",
                          timeout=300)  # fmt: skip
    return dict(json.loads(result.stdout))


def prepare(platform: RunningPlatform, directory: Path, docker_env: dict[str, str]) -> Prepared:
    repo = GitRepo.from_example("hello", directory / "repo")
    repo.write("stackyard.yml", STACKYARD_YML)
    repo.commit("one replica, fast health checks")
    platform.cli("stacks", "create", STACK, "--repo", str(repo.path))
    releases: dict[str, int] = {}
    digest = ""
    for version in ("v1", "v2"):
        if version != "v1":
            repo.set_version(version)
        platform.cli("build", STACK, timeout=300)
        record = json.loads(platform.cli("release", STACK, "--stage", "dev", "--json").stdout)
        releases[version], digest = record["number"], record["digest"]
        if version == "v1":
            deploy_cli(platform, record["number"])
    url = json.loads(platform.cli("url", STACK, "--stage", "dev", "--json").stdout)["url"]
    image_v2 = f"{platform.registry}/{STACK}@{digest}"
    creds = json.loads((platform.data_dir / "registry-credentials.json").read_text())
    subprocess.run([DOCKER, "login", platform.registry, "-u", creds["username"],
                    "--password-stdin"], env=docker_env, input=creds["password"],
                   capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    subprocess.run([DOCKER, "pull", image_v2], env=docker_env, capture_output=True, check=True,
                   timeout=300)  # fmt: skip
    return Prepared(platform, url.rstrip("/") + "/", releases, image_v2)


def back_to_v1(prepared: Prepared) -> None:
    """Deploy v1 again (untimed) and wait until only v1 runs and answers."""
    deploy_cli(prepared.platform, prepared.releases["v1"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = json.loads(prepared.platform.cli("check", STACK, "--stage", "dev", "--json").stdout)
        served = version_of(httpx.get(prepared.url, timeout=5).text)
        if state["converged"] and len(state["tasks"]) == 1 and served == "v1":
            return
        time.sleep(0.3)
    raise RuntimeError("the stage did not go back to v1")


def log_marks(log_path: Path, posted: datetime) -> dict[str, float]:
    """When the deployment log says the new task started, was routed, and the old one left."""
    marks: dict[str, float] = {}
    new_port = ""
    for line in log_path.read_text(encoding="utf-8").splitlines():
        found = LOG_LINE.match(line)
        if not found:
            continue
        stamp = datetime.fromisoformat(found["stamp"].replace("Z", "+00:00"))
        after = (stamp - posted).total_seconds()
        text = found["text"]
        started = re.match(r"started task \S+ on port (\d+)", text)
        if started and "task started" not in marks:
            marks["task started"] = after
            new_port = started[1]
        routing = re.match(r"rout\w* \S+ -> (.*)$", text)
        if routing and new_port and f":{new_port}" in routing[1]:
            marks.setdefault("new task routed", after)
            if routing[1].strip() == f"127.0.0.1:{new_port}":
                marks.setdefault("old task unrouted", after)
        if text.startswith("stopping task"):
            marks.setdefault("old task stopping", after)
    return marks


def stackyard_run(prepared: Prepared, api: httpx.Client, stage: httpx.Client) -> StackyardRun:
    path = f"/api/v1/stacks/{STACK}/stages/dev/deployments"
    posted = datetime.now(UTC)
    started = time.perf_counter()
    response = api.post(path, json={"release": prepared.releases["v2"]})
    response.raise_for_status()
    number = response.json()["number"]
    streak_start: float | None = None
    first_v2: float | None = None
    streak = 0
    deadline = started + 60
    while streak < STREAK:
        if time.perf_counter() > deadline:
            raise RuntimeError("v2 did not take all traffic within 60 s")
        at = time.perf_counter()
        try:
            served = version_of(stage.get(prepared.url).text)
        except httpx.HTTPError:
            served = ""
        if served == "v2":
            first_v2 = at if first_v2 is None else first_v2
            streak_start = at if streak == 0 else streak_start
            streak += 1
        else:
            streak = 0
        time.sleep(POLL_PAUSE)
    if streak_start is None or first_v2 is None:
        raise RuntimeError("no v2 answer")
    record: dict[str, Any] = api.get(f"{path}/{number}").json()
    while record["status"] in ("QUEUED", "IN_PROGRESS") and time.perf_counter() < deadline:
        time.sleep(0.1)
        record = api.get(f"{path}/{number}").json()
    if record["status"] != "COMPLETED":
        raise RuntimeError(f"deployment {number} ended {record['status']}: {record['reason']}")
    finished = datetime.fromisoformat(record["finished_at"])
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=UTC)
    return StackyardRun(
        seconds=streak_start - started,
        first_v2=first_v2 - started,
        completed=(finished - posted).total_seconds(),
        marks=log_marks(Path(record["log_path"]), posted),
    )


def floor_run(image: str) -> float:
    port = free_port()
    name = f"sy-bench-floor-{port}"
    url = f"http://127.0.0.1:{port}/healthz"
    started = time.perf_counter()
    try:
        subprocess.run([DOCKER, "run", "-d", "--init", "--network", "host", "--name", name,
                        "-e", f"PORT={port}", "-e", "HOST=127.0.0.1", image],
                       capture_output=True, check=True, timeout=60)  # fmt: skip
        deadline = started + 30
        with httpx.Client(timeout=1) as client:
            while time.perf_counter() < deadline:
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(HEALTH_POLL)
        raise RuntimeError("the floor container never answered /healthz")
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True, timeout=60)


def measure(runs: int) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-lat-") as tmp:
        directory = Path(tmp)
        config = directory / "docker-config"
        config.mkdir(mode=0o700)
        docker_env = {**os.environ, "DOCKER_CONFIG": str(config)}
        platform = start_platform(directory / "data")
        try:
            prepared = prepare(platform, directory, docker_env)
            headers = {"Authorization": f"Bearer {platform.token}"}
            with (
                httpx.Client(base_url=platform.api_url, headers=headers, timeout=30) as api,
                httpx.Client(timeout=5) as stage,
            ):
                for i in range(runs):
                    back_to_v1(prepared)

                    def ours(i: int = i) -> None:
                        run = stackyard_run(prepared, api, stage)
                        results.stackyard.append(run)
                        print(f"run {i + 1}: Stackyard {run.seconds:.2f} s", flush=True)

                    def floor(i: int = i) -> None:
                        results.floor.append(floor_run(prepared.image_v2))
                        print(f"run {i + 1}: floor {results.floor[-1]:.2f} s", flush=True)

                    for side in (ours, floor) if i % 2 == 0 else (floor, ours):
                        side()
        finally:
            subprocess.run([DOCKER, "logout", platform.registry], env=docker_env,
                           capture_output=True, timeout=60)  # fmt: skip
            stop_platform(platform)
    return results


def spread(values: list[float]) -> str:
    return f"| {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"


def report(runs: int, results: Results) -> str:
    ours = statistics.median(r.seconds for r in results.stackyard)
    floor = statistics.median(results.floor)
    overhead = ours - floor
    verdict = "meets" if overhead <= GOAL else "misses"
    lines = [
        "## Deploy latency",
        "",
        f"Goal: all traffic on the new version within the floor + {GOAL:.0f} s, for one "
        f"replica. {runs} runs each, interleaved (the side that goes first alternates); "
        "before each Stackyard run the stage is deployed back to v1 (untimed).",
        "",
        "- **Stackyard**: a real platform (API, registry, Caddy) on loopback; `examples/hello`, "
        "`replicas: 1`, health check `GET /healthz` with `interval: 0.5` (a new task is "
        "probed every 20 ms in its first second), drain 1 s. The clock starts just before `POST "
        "/api/v1/stacks/lat/stages/dev/deployments` (httpx, admin token) and stops at the "
        f"first of {STREAK} consecutive answers of the stage URL (Caddy) that all show "
        f"`VERSION=v2` (one request every ~{POLL_PAUSE * 1000:.0f} ms).",
        "- **floor**: `docker run -d --init --network host -e PORT -e HOST <v2 image by "
        "digest, already pulled>`, then `GET /healthz` every 10 ms: from the run command to "
        "the first 200 (container start + first passing health check, docker CLI included).",
        "",
        "| what | median s | min s | max s |",
        "|---|---|---|---|",
        f"| floor: `docker run` to first healthy answer {spread(results.floor)}",
        f"| Stackyard: deploy call to all traffic on v2 {spread([r.seconds for r in results.stackyard])}",  # noqa: E501
        f"| Stackyard: deploy call to first v2 answer {spread([r.first_v2 for r in results.stackyard])}",  # noqa: E501
        f"| Stackyard: deploy call to deployment COMPLETED (drain + stop included) "
        f"{spread([r.completed for r in results.stackyard])}",
        "",
        f"Difference of medians: **{overhead:+.2f} s** over the floor; this {verdict} the goal "
        f"of floor + {GOAL:.0f} s.",
        "",
        "Where Stackyard's time goes, from the deployment log (seconds after the deploy call):",
        "",
        "| event | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    names: list[str] = []
    for run in results.stackyard:
        names += [name for name in run.marks if name not in names]
    for name in names:
        values = [r.marks[name] for r in results.stackyard if name in r.marks]
        lines.append(f"| {name} {spread(values)}")
    lines += [
        "",
        "How to read it: `task started` is logged when the engine has created and started "
        "the container (pulling by digest is a no-op, the image is local); the first health "
        "probe that passes comes at most one fast-probe interval (20 ms) after the app "
        "listens, and the same tick swaps the route from the old task to the new one (one "
        "replica: the old task leaves the route in the same change, so there is no mixed "
        "period). Caddy picks "
        "the new upstreams up at its next SRV refresh (every 25 ms), which is the gap "
        "between `new task routed` and the first v2 answer. The drain (1 s) and the stop "
        "come after all traffic is on v2 and are not part of the latency. The machine is "
        "shared (2 cores, other tenants), so the spread is wide.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.deploy_latency --runs {runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    bench_main("deploy_latency", __doc__, measure, report)


if __name__ == "__main__":
    main()
