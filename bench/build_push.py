"""Build and push of an example app: through Stackyard, against plain ``docker build && push``.

Side by side in one run, interleaved (the side that goes first alternates): (a) ``stackyard
build <stack> --json`` against a real platform (started here on free loopback ports with a
temporary data dir, stopped in the end) for a git repo of ``examples/hello``, and (b)
``DOCKER_BUILDKIT=0 docker build --network host`` of the same context followed by ``docker
push`` of ``:latest`` and ``:<tag>`` to the same registry, with Debian's docker CLI. Every run
changes the page's VERSION marker first (a new commit for Stackyard), so no run is a no-op.
Stackyard's time is broken down by phase from the timestamps in its build log.
Usage:
    .venv/bin/python -m bench.build_push [--runs 5] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.integration.conftest import RunningPlatform, start_platform, stop_platform
from tests.integration.gitrepo import EXAMPLES, GitRepo

from bench.report import update_section

GOAL = 1.15
DOCKER = "/usr/bin/docker"  # Debian's CLI, as a user of the platform would have it
STACK = "bench"
PLAIN_REPOSITORY = "plain"
LOG_LINE = re.compile(r"^(?P<stamp>\S+Z) \[(?P<phase>[^\]]+)\] ")
VERSION_MARKER = re.compile(r"VERSION=[^<\s]+")


@dataclass
class Phases:
    """Seconds spent per phase of one Stackyard build, from its log's timestamps."""

    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    plain_steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cli_start: list[float] = field(default_factory=list)  # `stackyard --version` alone
    phases: list[Phases] = field(default_factory=list)


class PlainDocker:
    """The baseline: Debian's docker CLI, logged in once with a temporary DOCKER_CONFIG."""

    def __init__(self, platform: RunningPlatform, directory: Path) -> None:
        creds = json.loads((platform.data_dir / "registry-credentials.json").read_text())
        config = directory / "docker-config"
        config.mkdir(mode=0o700)
        self.env = {**os.environ, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0"}
        self.image = f"{platform.registry}/{PLAIN_REPOSITORY}"
        self.context = directory / "plain-context"
        shutil.copytree(EXAMPLES / "hello", self.context)
        self.run("login", platform.registry, "-u", creds["username"], "--password-stdin",
                 stdin=creds["password"])  # fmt: skip

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> None:
        result = subprocess.run([DOCKER, *args], env=self.env, input=stdin, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")

    def set_version(self, version: str) -> None:
        index = self.context / "www" / "index.html"
        index.write_text(VERSION_MARKER.sub(f"VERSION={version}", index.read_text()))

    def build_and_push(self, tag: str, steps: dict[str, list[float]]) -> float:
        started = time.perf_counter()
        self.run("build", "--network", "host", "-t", f"{self.image}:{tag}",
                 "-t", f"{self.image}:latest", str(self.context))  # fmt: skip
        built = time.perf_counter()
        self.run("push", f"{self.image}:latest")
        self.run("push", f"{self.image}:{tag}")
        finished = time.perf_counter()
        steps["docker build"].append(built - started)
        steps["docker push x2"].append(finished - built)
        # Stackyard removes its images after the push, inside its timing; here it is outside.
        self.run("rmi", f"{self.image}:{tag}", f"{self.image}:latest", check=False)
        return finished - started


def stackyard_build(platform: RunningPlatform, repo: GitRepo, version: str) -> tuple[float, Phases]:
    sha = repo.set_version(version)
    wall_start = datetime.now(UTC)
    started = time.perf_counter()
    result = platform.cli("build", STACK, "--json", timeout=600)
    elapsed = time.perf_counter() - started
    wall_end = datetime.now(UTC)
    record = json.loads(result.stdout)
    if record["status"] != "SUCCEEDED" or record["commit_sha"] != sha:
        raise RuntimeError(f"build did not succeed for {sha}: {record}")
    return elapsed, phases_of(Path(record["log_path"]), wall_start, wall_end)


def cli_start(platform: RunningPlatform) -> float:
    """The CLI's own start-up cost: ``stackyard --version`` imports every command module."""
    started = time.perf_counter()
    platform.cli("--version")
    return time.perf_counter() - started


def phases_of(log_path: Path, wall_start: datetime, wall_end: datetime) -> Phases:
    """Split one build's time by its log: each phase's own lines, and the gaps between phases.

    A run of consecutive lines of one phase counts as that phase, from its first line to its
    last; the silent time from the last line of one phase to the first of the next is the
    gap ``A → B`` (work that logs nothing, e.g. the digest reads). Before the first line: the
    CLI starting, the API call and the queue. After the last line: recording the result,
    the CLI receiving the end event of the log stream, and exiting.
    """
    marks: list[tuple[datetime, str]] = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        found = LOG_LINE.match(line)
        if found:
            stamp = datetime.fromisoformat(found["stamp"].replace("Z", "+00:00"))
            marks.append((stamp, found["phase"]))
    groups: list[tuple[str, datetime, datetime]] = []  # phase, first line, last line
    for stamp, phase in marks:
        if groups and groups[-1][0] == phase:
            groups[-1] = (phase, groups[-1][1], stamp)
        else:
            groups.append((phase, stamp, stamp))
    phases = Phases()
    seconds = phases.seconds
    seconds["CLI start + API + queue"] = (groups[0][1] - wall_start).total_seconds()
    for (phase, first, last), following in zip(groups, [*groups[1:], None], strict=True):
        seconds[phase] = seconds.get(phase, 0.0) + (last - first).total_seconds()
        if following is not None:
            gap = f"{phase} → {following[0]}"
            seconds[gap] = seconds.get(gap, 0.0) + (following[1] - last).total_seconds()
    seconds["record + CLI sees the end + exit"] = (wall_end - groups[-1][2]).total_seconds()
    return phases


def warm_up(platform: RunningPlatform, repo: GitRepo, plain: PlainDocker) -> None:
    """One untimed run per side, so both repositories already hold the base layer."""
    stackyard_build(platform, repo, "bench-warm-up")
    plain.set_version("bench-warm-up")
    plain.build_and_push("warm-up", defaultdict(list))


def measure(runs: int, results: Results) -> str:
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-") as tmp:
        directory = Path(tmp)
        platform = start_platform(directory / "data")
        plain: PlainDocker | None = None
        try:
            repo = GitRepo.from_example("hello", directory / "repo")
            platform.cli("stacks", "create", STACK, "--repo", str(repo.path))
            plain = PlainDocker(platform, directory)
            warm_up(platform, repo, plain)
            for i in range(runs):
                version = f"bench-{i}"
                plain.set_version(version)

                def ours(version: str = version) -> None:
                    elapsed, phases = stackyard_build(platform, repo, version)
                    results.ours.append(elapsed)
                    results.phases.append(phases)

                def theirs(i: int = i) -> None:
                    results.theirs.append(plain.build_and_push(f"run-{i}", results.plain_steps))

                for side in (ours, theirs) if i % 2 == 0 else (theirs, ours):
                    side()
                results.cli_start.append(cli_start(platform))
            return platform.registry
        finally:
            if plain is not None:
                subprocess.run([DOCKER, "logout", platform.registry], env=plain.env,
                               capture_output=True, timeout=60)  # fmt: skip
            stop_platform(platform)


def spread(values: list[float]) -> str:
    return f"| {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"


def report(runs: int, results: Results) -> str:
    ours, theirs = statistics.median(results.ours), statistics.median(results.theirs)
    ratio = ours / theirs
    verdict = "meets" if ratio <= GOAL else "misses"
    edges = ("CLI start + API + queue", "record + CLI sees the end + exit")
    server = [
        sum(v for k, v in phases.seconds.items() if k not in edges) for phases in results.phases
    ]
    client = [sum(phases.seconds[k] for k in edges) for phases in results.phases]
    lines = [
        "## Build and push of an example app",
        "",
        f"Goal: Stackyard's build at most {GOAL:.2f}x the time of plain `docker build && "
        "docker push` of the same context. The app is `examples/hello` (busybox + one "
        f"`COPY`). {runs} runs each, interleaved (the side that goes first alternates), after "
        "one untimed warm-up run per side; every run changes the page's VERSION marker "
        "first (a new commit for Stackyard), so no build is a no-op. The Docker layer cache "
        "is warm for both sides alike (the busybox base is local and already in the registry).",
        "",
        "- **Stackyard**: `stackyard build bench --json`, from the CLI starting to it "
        "returning SUCCEEDED, against a real platform (API, SQLite, registry with htpasswd "
        "auth, Caddy) on loopback.",
        "- **plain**: `DOCKER_BUILDKIT=0 docker build --network host -t IMAGE:TAG -t "
        "IMAGE:latest CONTEXT`, then `docker push IMAGE:latest` and `docker push IMAGE:TAG`, "
        "with Debian's docker CLI logged in once beforehand, to the same registry.",
        "",
        "| side | median s | min s | max s |",
        "|---|---|---|---|",
        f"| Stackyard `build` {spread(results.ours)}",
        f"| plain build + push x2 {spread(results.theirs)}",
        *(f"| plain: {step} {spread(values)}" for step, values in results.plain_steps.items()),
        f"| Stackyard, first to last build log line (server side) {spread(server)}",
        f"| `stackyard --version` alone (CLI start-up) {spread(results.cli_start)}",
        "",
        f"Ratio of medians: **{ratio:.2f}** ({ours - theirs:+.2f} s); this {verdict} the "
        f"goal of {GOAL:.2f}.",
        f"Server side alone (first to last log line) the ratio is "
        f"**{statistics.median(server) / theirs:.2f}**; the CLI around it adds a median "
        f"{statistics.median(client):.2f} s: its own start-up (`stackyard --version` alone "
        f"takes {statistics.median(results.cli_start):.2f} s: a Python interpreter, Typer "
        "and the command modules), the API call, and following the log until the build's "
        "end event.",
        "",
        "What Stackyard does in addition to build and push: the CLI's API call and its "
        "server-sent event stream of the log, the build record in SQLite, a `git fetch` into "
        "the stack's cache and a `git worktree` checkout of the commit, parsing "
        "`stackyard.yml`, reading the current `latest` and `<sha>` digests (to restore them "
        "if the build fails; alongside the checkout and build), and tagging `<sha>` in the "
        "registry by one manifest copy (instead of a second push).",
        "",
        "Where Stackyard's time goes, from the build log's timestamps (each line's time is "
        "counted to its phase until the next line):",
        "",
        "| phase | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    names: list[str] = []
    for phases in results.phases:
        names += [name for name in phases.seconds if name not in names]
    for name in names:
        values = [phases.seconds.get(name, 0.0) for phases in results.phases]
        lines.append(f"| {name} {spread(values)}")
    lines += [
        "",
        "How to read it: `CLI start + API + queue` runs from the CLI process starting to "
        "the build's first log line; `source` is the `git fetch` into the stack's cache; "
        "`source → config` the worktree checkout and `stackyard.yml` parsing; `config → "
        "build` recording the config and connecting to the engine; `build` the engine's "
        "build; `push` the push of `latest`; `push → registry` dropping the `<sha>` tag from "
        "the engine and tagging `<sha>` in the registry by a manifest copy; the last row "
        "recording the result, the CLI receiving the end event, reading the build record "
        "and exiting.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.build_push --runs {runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    results = Results()
    measure(args.runs, results)
    body = report(args.runs, results)
    print(body)
    if not args.no_write:
        update_section("build_push", body)


if __name__ == "__main__":
    main()
