"""Auto-dockerize on the real-app corpus (tests/apps/corpus.toml): does each app build and
serve with its generated Dockerfile, how long does the build take with a cold and with a
warm layer cache, and how big is the image.

For each app: its generated Dockerfile is written into a copy of the app, then
``DOCKER_BUILDKIT=0 docker build --network host`` with every image this benchmark built
removed first (cold: the base image is local, no layer of the app is reused), then a file
is added to the context and the same build runs again with the cache (warm: a source
change). The image is run with ``--init --network host
-e HOST=127.0.0.1 -e PORT=<free>``, and its page is fetched from 127.0.0.1: served when
it answers 200 with the app's own text. Deploying through the platform is what
tests/integration/test_dockerize_corpus.py does. Everything made here is removed: the
containers and images by id, the build stages' images by the ids the builds printed.
Usage:
    .venv/bin/python -m bench.dockerize [--runs 1] [--no-write] [--apps a,b]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tests.apps.corpus import App, ensure, manifest

from bench.report import update_section
from stackyard.images.dockerize import detect
from stackyard.images.dockerize.python import platform_hosts

DOCKER = "/usr/bin/docker"
STEP_ID = re.compile(r"^ ---> ([0-9a-f]{12})$", re.MULTILINE)


@dataclass
class Result:
    app: App
    kind: str = ""
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    size: int = 0
    served: bool = False
    error: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip


class Made:
    """What this benchmark made, removed at the end by id."""

    def __init__(self) -> None:
        self.images: list[str] = []
        self.steps: set[str] = set()
        self.containers: list[str] = []

    def build(self, tag: str, context: Path, *extra: str) -> float:
        started = time.perf_counter()
        result = docker("build", "--network", "host", "--force-rm", *extra, "-t", tag,
                        str(context))  # fmt: skip
        elapsed = time.perf_counter() - started
        self.steps |= set(STEP_ID.findall(result.stdout))
        if result.returncode != 0:
            raise RuntimeError(f"docker build failed:\n{result.stdout[-3000:]}{result.stderr}")
        self.images.append(tag)
        return elapsed

    def forget(self) -> None:
        """Remove every image built so far, so the next build starts from a cold cache."""
        for image in self.images:
            docker("rmi", "-f", image)
        self.images.clear()
        dangling = set(docker("images", "-q", "--filter", "dangling=true").stdout.split())
        ours = sorted(self.steps & dangling)
        if ours:
            docker("rmi", *ours)

    def cleanup(self) -> None:
        for container in self.containers:
            docker("rm", "-f", container)
        self.forget()


def serves(made: Made, tag: str, app: App) -> bool:
    port = free_port()
    platform = [f"-e{name}={value}" for name, value in platform_hosts(None).items()]
    run = docker("run", "-d", "--init", "--network", "host", "-e", "HOST=127.0.0.1",
                 "-e", f"PORT={port}", *platform, tag)  # fmt: skip
    if run.returncode != 0:
        return False
    made.containers.append(run.stdout.strip())
    deadline = time.monotonic() + 60
    with httpx.Client(trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(f"http://127.0.0.1:{port}{app.path}")
            except httpx.TransportError:
                time.sleep(0.3)
                continue
            return response.status_code == 200 and app.expect in response.text
    return False


def measure_app(app: App, date: str, runs: int, directory: Path, made: Made) -> Result:
    result = Result(app)
    context = directory / app.name
    shutil.copytree(ensure(app, date), context)
    context = context / app.context
    detection = detect(context)
    result.kind = detection.kind
    (context / "Dockerfile").write_text(detection.dockerfile, encoding="utf-8")
    tag = f"stackyard-bench-dockerize-{app.name}:latest"
    try:
        for run in range(runs):
            # Cold: this app's images are gone. (Not --no-cache: it leaves twin images of
            # each step, and the next cached build may follow the wrong twin.)
            made.forget()
            result.cold.append(made.build(tag, context))
            (context / "bench-change.txt").write_text(f"change {run}\n")
            result.warm.append(made.build(tag, context))
        result.size = int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())
        result.served = serves(made, tag, app)
    except RuntimeError as exc:
        result.error = str(exc).splitlines()[-1][:200]
    return result


def measure(runs: int, names: set[str]) -> list[Result]:
    date, apps = manifest()
    results: list[Result] = []
    made = Made()
    with tempfile.TemporaryDirectory(prefix="stackyard-bench-dockerize-") as tmp:
        try:
            for app in apps:
                if names and app.name not in names:
                    continue
                results.append(measure_app(app, date, runs, Path(tmp), made))
                print(f"{app.name}: done", flush=True)
        finally:
            made.cleanup()
    return results


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def report(runs: int, results: list[Result]) -> str:
    served = sum(1 for r in results if r.served)
    lines = [
        "## Auto-dockerize on the real-app corpus",
        "",
        f"**{served} of {len(results)}** corpus apps (tests/apps/corpus.toml) build with their "
        "generated Dockerfile and serve their page (200 with the app's own text), started "
        "as a task is (`--init`, host network, `HOST=127.0.0.1`, `PORT`, `ALLOWED_HOSTS` and "
        "`DJANGO_ALLOWED_HOSTS`). The integration test "
        "tests/integration/test_dockerize_corpus.py deploys the same apps through a real "
        "platform. The machine is shared with other builds: single timings are noisy.",
        "",
        f"Build times: `DOCKER_BUILDKIT=0 docker build --network host`, median of {runs} "
        "run(s). Cold: the app's images removed first (the base image is local; every "
        "package is downloaded again). Warm: the same build after one file is added to the "
        "context, with the layer cache (a source change; dependencies are not reinstalled, "
        "a front-end is rebuilt). "
        "Size: the image as the engine reports it, base image included.",
        "",
        "| app | kind | cold build s | warm build s | image MB | serves |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        size = f"{r.size / 1e6:.0f}" if r.size else "-"
        verdict = "yes" if r.served else f"no {r.error}".strip()
        lines.append(
            f"| {r.app.name} | {r.kind} | {median(r.cold)} | {median(r.warm)} | {size} | "
            f"{verdict} |"
        )
    lines += [
        "",
        "None of these apps ships a Dockerfile of its own (the starters publish none), so "
        "there is no hand-written Dockerfile of the same app to compare build time and "
        "image size against.",
        "",
        f"Reproduce: `.venv/bin/python -m bench.dockerize --runs {runs}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--apps", default="", help="comma-separated app names (default: all)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    names = {name for name in args.apps.split(",") if name}
    body = report(args.runs, measure(args.runs, names))
    print(body)
    if not args.no_write:
        update_section("dockerize", body)


if __name__ == "__main__":
    main()
