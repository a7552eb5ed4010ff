"""Push-to-live latency of a one-line change, with the build cache warm, against plain Docker.

(a) **Stackyard**: a real platform on loopback (started here on free ports with a temporary
data dir, stopped in the end), a stack from a git repo of ``examples/hello`` whose
``stackyard.yml`` has one stage ``dev`` with fast health checks, and the platform's own git
remote (``stackyard remote``) added as ``stackyard``. One untimed warm-up push (v1) is
deployed first. Each run changes the page's VERSION marker (one line), commits, and runs
``git push stackyard main``; the clock starts when the push command returns and stops at
the first of ``STREAK`` consecutive answers of the dev URL (Caddy) that show the new VERSION.
(b) **plain**: the same one-line change in a separate copy of the context, then
``DOCKER_BUILDKIT=0 docker build --network host -t bench-ptl:<n> <ctx>``, ``docker rm -f``
of the previous container and ``docker run -d --init --network host -e PORT -e HOST`` of the
new image on the same port; the clock runs from the start of ``docker build`` to the first of
``STREAK`` consecutive answers with the new VERSION.
A background thread polls the served URL all along (every ~10 ms), so failed requests and the
gap between the last old answer and the first new one are counted on both sides.
Runs are interleaved; the side that goes first alternates.
Usage:
    .venv/bin/python -m bench.push_to_live [--runs 5] [--no-write]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import RunningPlatform, free_port, start_platform, stop_platform
from tests.integration.gitrepo import EXAMPLES, GitRepo

from bench.deploy_latency import log_marks
from bench.report import bench_main

GOAL = 1.5  # Stackyard's push-to-live at most this many times the plain build + run
DOCKER = "/usr/bin/docker"
STACK = "ptl"
PLAIN_IMAGE = "bench-ptl"
STREAK = 5  # consecutive answers with the new VERSION that count as "live"
POLL_PAUSE = 0.010
RUN_TIMEOUT = 120.0
STACKYARD_YML = """\
stages:
  - name: dev
    replicas: 1
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
"""
VERSION = re.compile(r"VERSION=([^<\s]+)")
BUILD_LOG_LINE = re.compile(r"^(?P<stamp>\S+Z) \[(?P<phase>[^\]]+)\] ")
RUN_STARTED = re.compile(r"pipeline run (\d+) started")


def version_of(text: str) -> str:
    found = VERSION.search(text)
    return found[1] if found else ""


class Poller:
    """GET a URL every ~10 ms in a thread; record (time, version or "" for a failure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.is_set():
                at = time.perf_counter()
                try:
                    response = client.get(self.url)
                    served = version_of(response.text) if response.status_code == 200 else ""
                except httpx.HTTPError:
                    served = ""
                self.samples.append((at, served))
                time.sleep(POLL_PAUSE)

    def live_at(self, version: str, since: float, timeout: float = RUN_TIMEOUT) -> float:
        """Wait for STREAK consecutive answers of ``version`` after ``since``; when it began."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            streak, start = 0, 0.0
            for at, served in list(self.samples):
                if at < since:
                    continue
                if served == version:
                    start = at if streak == 0 else start
                    streak += 1
                    if streak >= STREAK:
                        return start
                else:
                    streak = 0
            time.sleep(0.02)
        raise RuntimeError(f"{self.url} did not serve VERSION={version} within {timeout:.0f} s")


@dataclass
class Outage:
    failed: int  # requests that got no 200 with a VERSION
    gap: float  # seconds from the last answer of the old version to the first of the new
    requests: int


def outage(samples: list[tuple[float, str]], old: str, new: str, since: float) -> Outage:
    window = [(at, served) for at, served in samples if at >= since]
    last_old = max((at for at, served in window if served == old), default=since)
    first_new = min((at for at, served in window if served == new), default=last_old)
    failed = sum(1 for _, served in window if served not in (old, new))
    return Outage(failed, max(0.0, first_new - last_old), len(window))


@dataclass
class Run:
    seconds: float  # the side's clock to STREAK consecutive new answers
    outage: Outage
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    stackyard: list[Run] = field(default_factory=list)
    plain: list[Run] = field(default_factory=list)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C.UTF-8")
    result = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    stamp = datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


class StackyardSide:
    def __init__(self, platform: RunningPlatform, directory: Path) -> None:
        self.platform = platform
        self.repo = GitRepo.from_example("hello", directory / "repo")
        self.repo.write("stackyard.yml", STACKYARD_YML)
        self.repo.commit("one stage, fast health checks")
        platform.cli("stacks", "create", STACK, "--repo", str(self.repo.path))
        remote = platform.cli("remote", STACK).stdout.strip()
        self.repo.git("remote", "add", "stackyard", remote)
        self.api = httpx.Client(base_url=platform.api_url, timeout=30,
                                headers={"Authorization": f"Bearer {platform.token}"})  # fmt: skip
        self.url = ""
        self.version = ""

    def close(self) -> None:
        self.api.close()

    def push(self, version: str) -> tuple[int, float, float, datetime]:
        """Commit the change and push; the run number, push start/return, return wall time."""
        self.repo.set_version(version)
        started = time.perf_counter()
        pushed = git(self.repo.path, "push", "-q", "stackyard", "main")
        returned = time.perf_counter()
        wall = datetime.now(UTC)
        found = RUN_STARTED.search(pushed.stderr)
        if not found:
            raise RuntimeError(f"the push started no run: {pushed.stderr.strip()}")
        return int(found[1]), started, returned, wall

    def wait_run(self, number: int) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            record: dict[str, Any] = self.api.get(f"/api/v1/stacks/{STACK}/runs/{number}").json()
            if record["status"] not in ("QUEUED", "RUNNING"):
                if record["status"] != "SUCCEEDED":
                    raise RuntimeError(f"run {number} ended {record['status']}: {record['error']}")
                return record
            time.sleep(0.1)
        raise RuntimeError(f"run {number} did not finish within {RUN_TIMEOUT:.0f} s")

    def build_marks(self, number: int, wall: datetime) -> dict[str, float]:
        """First and last line of the build's own `build` and `push` phases, from its log."""
        record = self.api.get(f"/api/v1/stacks/{STACK}/builds/{number}").json()
        marks: dict[str, float] = {}
        for line in Path(record["log_path"]).read_text(encoding="utf-8").splitlines():
            found = BUILD_LOG_LINE.match(line)
            if found and found["phase"] in ("build", "push"):
                stamp = datetime.fromisoformat(found["stamp"].replace("Z", "+00:00"))
                after = (stamp - wall).total_seconds()
                marks.setdefault(f"build: {found['phase']} phase first line", after)
                marks[f"build: {found['phase']} phase last line"] = after
        return marks

    def deployment_marks(self, number: int, wall: datetime) -> dict[str, float]:
        """Task started, routed, old task stopping: from the dev deployment's log."""
        path = f"/api/v1/stacks/{STACK}/stages/dev/deployments/{number}"
        record = self.api.get(path).json()
        marks = log_marks(Path(record["log_path"]), wall)
        return {f"deploy dev: {name}": seconds for name, seconds in marks.items()}

    def warm_up(self) -> None:
        """Push v1 (untimed) and wait until the run is over and dev serves it."""
        self.version = version_of((self.repo.path / "www" / "index.html").read_text())
        number, *_ = self.push(self.version)
        self.wait_run(number)
        url = json.loads(self.platform.cli("url", STACK, "--stage", "dev", "--json").stdout)["url"]
        self.url = url.rstrip("/") + "/"
        with Poller(self.url) as poller:
            poller.live_at(self.version, 0.0, timeout=30)

    def run(self, version: str) -> Run:
        with Poller(self.url) as poller:
            poller.live_at(self.version, 0.0, timeout=30)
            number, push_started, returned, wall = self.push(version)
            live = poller.live_at(version, returned)
            record = self.wait_run(number)
        detail = {"git push itself": returned - push_started}
        for step in record["steps"]:
            name = f"{step['kind']} {step['stage']}".strip()
            begun, ended = parse_time(step["started_at"]), parse_time(step["finished_at"])
            if begun is not None:
                detail[f"{name} started"] = (begun - wall).total_seconds()
            if ended is not None:
                detail[f"{name} finished"] = (ended - wall).total_seconds()
            if step["kind"] == "build" and step["number"] is not None:
                detail.update(self.build_marks(step["number"], wall))
            if step["kind"] == "deploy" and step["number"] is not None:
                detail.update(self.deployment_marks(step["number"], wall))
        detail["first new answer"] = (
            min(at for at, served in poller.samples if at >= returned and served == version)
            - returned
        )
        result = Run(live - returned, outage(poller.samples, self.version, version, push_started),
                     detail)  # fmt: skip
        self.version = version
        return result


class PlainSide:
    """The baseline: docker build, then replace the container on one fixed port."""

    def __init__(self, directory: Path) -> None:
        self.context = directory / "plain-context"
        shutil.copytree(EXAMPLES / "hello", self.context)
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.name = f"bench-ptl-{self.port}"
        self.tags: list[str] = []
        self.serial = 0
        self.version = ""

    def docker(self, *args: str, check: bool = True) -> None:
        result = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")

    def set_version(self, version: str) -> None:
        index = self.context / "www" / "index.html"
        index.write_text(VERSION.sub(f"VERSION={version}", index.read_text()))

    def deploy(self, version: str) -> dict[str, float]:
        self.set_version(version)
        self.serial += 1
        tag = f"{PLAIN_IMAGE}:{self.serial}"
        self.tags.append(tag)
        started = time.perf_counter()
        self.docker("build", "--network", "host", "-t", tag, str(self.context))
        built = time.perf_counter()
        self.docker("rm", "-f", self.name, check=False)
        removed = time.perf_counter()
        self.docker("run", "-d", "--init", "--network", "host", "--name", self.name,
                    "-e", f"PORT={self.port}", "-e", "HOST=127.0.0.1", tag)  # fmt: skip
        ran = time.perf_counter()
        return {"start": started, "docker build": built - started,
                "docker rm -f": removed - built, "docker run -d": ran - removed}  # fmt: skip

    def warm_up(self) -> None:
        self.version = "plain-warm-up"
        self.deploy(self.version)
        with Poller(self.url) as poller:
            poller.live_at(self.version, 0.0, timeout=30)

    def run(self, version: str) -> Run:
        with Poller(self.url) as poller:
            poller.live_at(self.version, 0.0, timeout=30)
            steps = self.deploy(version)
            started = steps.pop("start")
            live = poller.live_at(version, started)
        result = Run(live - started, outage(poller.samples, self.version, version, started), steps)
        self.version = version
        return result

    def clean(self) -> None:
        self.docker("rm", "-f", self.name, check=False)
        if self.tags:
            self.docker("rmi", *self.tags, check=False)


def remove_platform_images(registry: str) -> None:
    """The tasks' images, pulled by digest from the platform's registry, stay in the engine.

    Removed by reference (``repo@digest``), never by image id: an unchanged example builds
    to the same id as other stacks' images, and removing by id would untag those too.
    """
    listed = subprocess.run([DOCKER, "images", "--digests", "--format",
                             "{{.Repository}}@{{.Digest}}", f"{registry}/{STACK}"],
                            capture_output=True, text=True, timeout=60).stdout.split()  # fmt: skip
    found = sorted({ref for ref in listed if not ref.endswith("@<none>")})
    if found:
        subprocess.run([DOCKER, "rmi", *found], capture_output=True, timeout=120)


def measure(runs: int) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-ptl-") as tmp:
        directory = Path(tmp)
        plain = PlainSide(directory)
        platform = start_platform(directory / "data")
        ours: StackyardSide | None = None
        try:
            ours = StackyardSide(platform, directory)
            ours.warm_up()
            plain.warm_up()
            for i in range(runs):
                version = f"ptl-{i + 1}"

                def stackyard(i: int = i, version: str = version) -> None:
                    assert ours is not None
                    run = ours.run(version)
                    results.stackyard.append(run)
                    print(f"run {i + 1}: Stackyard {run.seconds:.2f} s, "
                          f"{run.outage.failed} failed", flush=True)  # fmt: skip

                def baseline(i: int = i, version: str = version) -> None:
                    run = plain.run(version)
                    results.plain.append(run)
                    print(f"run {i + 1}: plain {run.seconds:.2f} s, {run.outage.failed} failed, "
                          f"gap {run.outage.gap:.2f} s", flush=True)  # fmt: skip

                for side in (stackyard, baseline) if i % 2 == 0 else (baseline, stackyard):
                    side()
        finally:
            if ours is not None:
                ours.close()
            plain.clean()
            stop_platform(platform)
            remove_platform_images(platform.registry)
    return results


def spread(values: list[float]) -> str:
    return f"| {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"


def where_it_goes(results: Results) -> list[str]:
    """One sentence splitting the difference of medians into build, hand-over and deploy."""

    def med(runs: list[Run], *names: str) -> float:
        return statistics.median(sum(r.detail[n] for n in names) for r in runs)

    ours, plain = results.stackyard, results.plain
    needed = ("build finished", "deploy dev started", "build: push phase first line",
              "build: push phase last line")  # fmt: skip
    if not all(name in r.detail for r in ours for name in needed):
        return []
    build = med(ours, "build finished")
    push = statistics.median(
        r.detail["build: push phase last line"] - r.detail["build: push phase first line"]
        for r in ours
    )
    handover = statistics.median(
        r.detail["deploy dev started"] - r.detail["build finished"] for r in ours
    )
    deploy = statistics.median(r.seconds - r.detail["deploy dev started"] for r in ours)
    replace = med(plain, "docker rm -f", "docker run -d")
    return [
        f"In medians: Stackyard's build step ends {build:.2f} s after the push returned "
        f"(plain `docker build`: {med(plain, 'docker build'):.2f} s); it also pushes to the "
        f"registry ({push:.2f} s), fetches and checks out the commit and reads digests. From "
        f"the build's end to the dev deployment starting (gate, release by retag): "
        f"{handover:.2f} s. From the deployment starting to the new version live: "
        f"{deploy:.2f} s (start the task, its first passing health check, the route change, "
        f"and Caddy's next upstream refresh), against {replace:.2f} s "
        "for plain `docker rm -f` + `docker run -d` (the first answer comes right after it).",
        "The machine is shared (2 cores, other tenants), so the spread is wide.",
    ]


def report(runs: int, results: Results) -> str:
    ours = statistics.median(r.seconds for r in results.stackyard)
    theirs = statistics.median(r.seconds for r in results.plain)
    ratio = ours / theirs
    verdict = "meets" if ratio <= GOAL else "misses"
    ours_failed = [r.outage.failed for r in results.stackyard]
    plain_failed = [r.outage.failed for r in results.plain]
    push = [r.detail["git push itself"] for r in results.stackyard]
    with_push = [r.seconds + r.detail["git push itself"] for r in results.stackyard]
    lines = [
        "## Push to live",
        "",
        f"Goal: from `git push` returning to the dev stage serving a one-line change, at most "
        f"{GOAL:.1f}x the time of plain `docker build` + `docker run` of the same change, with "
        f"zero downtime. The app is `examples/hello` (busybox + one `COPY`); the build cache "
        f"is warm on both sides (one untimed warm-up deployment each). {runs} runs each, "
        "interleaved (the side that goes first alternates); every run changes the page's "
        "VERSION marker (one line).",
        "",
        "- **Stackyard**: a real platform (API, SQLite, registry, Caddy) on loopback; a stack "
        "with one stage `dev` (`replicas: 1`, health `GET /healthz` with `interval: 0.5`, "
        "`start_period: 2`, drain 0.5 s); the change is committed and pushed with `git push "
        "stackyard main` to the platform's own remote (`stackyard remote ptl`), which starts "
        "a pipeline run (build, release, deploy dev). The clock starts when `git push` "
        f"returns and stops at the first of {STREAK} consecutive answers of the dev URL "
        "(Caddy) with the new VERSION.",
        "- **plain**: the same change in a copy of the context, `DOCKER_BUILDKIT=0 docker "
        "build --network host -t bench-ptl:N CTX`, `docker rm -f` of the previous "
        "container, `docker run -d --init --network host -e PORT -e HOST bench-ptl:N` on "
        "the same port. The clock starts with `docker build` and stops at the first of "
        f"{STREAK} consecutive answers with the new VERSION.",
        "",
        f"On both sides a thread polls the served URL every ~{POLL_PAUSE * 1000:.0f} ms from "
        "the start of the run to its end (for Stackyard: until the run is SUCCEEDED, drain "
        "and stop of the old task included); a request that gets no 200 with a VERSION is "
        "failed, and the gap is the time from the last answer of the old version to the "
        "first of the new one.",
        "",
        "| side | median s | min s | max s |",
        "|---|---|---|---|",
        f"| Stackyard: `git push` returned → new version live "
        f"{spread([r.seconds for r in results.stackyard])}",
        f"| plain: `docker build` start → new version live "
        f"{spread([r.seconds for r in results.plain])}",
        f"| Stackyard: `git push` itself (not in the clock) {spread(push)}",
        f"| Stackyard: `git push` start → new version live {spread(with_push)}",
        "",
        f"Ratio of medians: **{ratio:.2f}** ({ours - theirs:+.2f} s); this {verdict} the goal "
        f"of {GOAL:.1f}. Counting the push itself, the ratio is "
        f"{statistics.median(with_push) / theirs:.2f}.",
        "",
        "| side | failed requests per run (median, max) | gap old → new, median s (max) |",
        "|---|---|---|",
        f"| Stackyard | {statistics.median(ours_failed):.0f}, {max(ours_failed)} | "
        f"{statistics.median(r.outage.gap for r in results.stackyard):.2f} "
        f"({max(r.outage.gap for r in results.stackyard):.2f}) |",
        f"| plain | {statistics.median(plain_failed):.0f}, {max(plain_failed)} | "
        f"{statistics.median(r.outage.gap for r in results.plain):.2f} "
        f"({max(r.outage.gap for r in results.plain):.2f}) |",
        "",
        "Where the time goes (seconds; Stackyard's steps from the run record, relative to "
        "`git push` returning; plain's steps as the commands took):",
        "",
        "| step | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    for side, runs_of_side in (("Stackyard", results.stackyard), ("plain", results.plain)):
        names: list[str] = []
        for run in runs_of_side:
            names += [n for n in run.detail if n not in names and n != "git push itself"]
        rows = {n: [r.detail[n] for r in runs_of_side if n in r.detail] for n in names}
        if side == "Stackyard":  # events after the push returned: in the order they happen
            names.sort(key=lambda n: statistics.median(rows[n]))
        for name in names:
            lines.append(f"| {side}: {name} {spread(rows[name])}")
    lines += ["", *where_it_goes(results)]
    lines += [
        "",
        "The plain side's downtime is the window between `docker rm -f` and the new "
        "container's httpd listening: with host networking on one port, the new container "
        "cannot start before the old one is gone. Stackyard starts the new task on a new "
        "port, routes to it once healthy, then drains and stops the old one.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.push_to_live --runs {runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    bench_main("push_to_live", __doc__, measure, report)


if __name__ == "__main__":
    main()
