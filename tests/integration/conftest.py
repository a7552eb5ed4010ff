"""Fixtures that start the real platform (API, registry, Caddy) on free loopback ports.

Each fixture starts what it needs, waits for readiness with a timeout, and stops what
it started by pid. Nothing here fakes a component.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackyard.engines.swarm import docker_nanos

from .backends import Backend
from .lanes import lane_group, lane_rank

STACKYARD = [sys.executable, "-m", "stackyard"]


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each integration test with its lane group (``lanes.py``); when the run is in
    lanes (``--dist loadgroup``), put the longest groups first, each module in its order."""
    groups: dict[str, str] = {}
    for item in items:
        group = lane_group(item.nodeid)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            groups[item.nodeid] = group
    # An xdist worker's config says ``dist = "no"`` and sets ``loadgroup`` instead.
    if getattr(config.option, "loadgroup", False) or config.option.dist == "loadgroup":
        items.sort(key=lambda item: lane_rank(groups.get(item.nodeid)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningPlatform:
    data_dir: Path
    api_url: str
    registry: str
    router_admin: str
    pid: int
    children: dict[str, int]
    env: dict[str, str]
    started: float | None = None  # time.time() before `up`: its images are those made since

    @property
    def dataplane(self) -> dict[str, Any]:
        """The keeper's record: its pid, the responder's address, its components' pids."""
        return dict(json.loads((self.data_dir / "run" / "dataplane.json").read_text()))

    def up_again(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """`stackyard up -d` on the same data dir and ports (after a kill or `down`)."""
        return self.cli("up", "-d", "--api-port", self.api_url.rsplit(":", 1)[1],
                        "--registry-port", self.registry.rsplit(":", 1)[1], *extra)  # fmt: skip

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*STACKYARD, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"stackyard {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKYARD_")}
    env["STACKYARD_DATA_DIR"] = str(data_dir)
    env["XDG_CONFIG_HOME"] = str(data_dir.parent / "config")  # `stackyard login` writes here
    env["COLUMNS"] = "200"
    return env


def require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: run scripts/setup-host first")


def start_platform(
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    up_args: Sequence[str] = (),
) -> RunningPlatform:
    """``extra_env`` goes to every command (a benchmark runs an older checkout with it);
    ``up_args`` to ``stackyard up`` (``--engine swarm --engine-endpoint …``). Scheduled
    retention is off unless ``up_args`` asks for it: a module's platform can outlive its
    first-run delay, and a collection in the middle of another test's push is not what that
    test is about (tests of retention run it themselves)."""
    require("docker-registry")
    require("caddy")
    env = {**cli_env(data_dir), **(extra_env or {})}
    ports = {"--api-port": free_port(), "--registry-port": free_port()}
    started = time.time()
    argv = [*STACKYARD, "up", "-d", "--json", *up_args]
    if extra_env is None and not any(a.startswith("--retention-interval") for a in up_args):
        argv += ["--retention-interval", "0"]  # an older checkout (extra_env) lacks the option
    for flag, port in ports.items():
        argv += [flag, str(port)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        # A start that failed after the data plane came up leaves it running (it outlives
        # the control plane by design): stop it, so a failed test leaves no process behind.
        subprocess.run([*STACKYARD, "down", "--all"], env=env, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr + result.stdout
    state = json.loads(result.stdout)
    return RunningPlatform(
        data_dir=data_dir,
        api_url=state["api_url"],
        registry=state["registry"],
        router_admin=state["router_admin"],
        pid=state["pid"],
        children=state["children"],
        env=env,
        started=started,
    )


def stop_platform(
    running: RunningPlatform, images_since: float | None = None, also: Sequence[str] = ()
) -> None:
    """`stackyard down --all` (the control plane, then the data plane), then remove the
    tasks it leaves running (by the platform's label), and the images its builds and pulls
    left (``images_of``, made since ``images_since``, by default since it started; ``also``:
    other repositories only this run names, e.g. a test registry's), by id. Without this
    the engine kept every test platform's images: ~130 a run."""
    since = images_since if images_since is not None else running.started
    made = images_of(running, since, also) if since is not None else []
    subprocess.run([*STACKYARD, "down", "--all"], env=running.env, capture_output=True, timeout=90)
    remove_tasks(running.data_dir)
    remove_images(made)


def remove_tasks(data_dir: Path) -> None:
    id_file = data_dir / "platform-id"
    if not id_file.exists():
        return
    label = f"label=dev.stackyard.platform={id_file.read_text().strip()}"
    found = subprocess.run(
        ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True, timeout=60
    ).stdout.split()
    if found:
        subprocess.run(["docker", "rm", "-f", *found], capture_output=True, timeout=120)


def images_of(running: RunningPlatform, since: float, also: Sequence[str] = ()) -> list[str]:
    """What to remove once the platform stops: every name the engine holds in the
    platform's registry (``name:tag``, or ``name@digest``) or in the repositories ``also``,
    then the bare names (``builtimage``, a build spec's ``docker build -t``) of those
    images made at or after ``since`` (``time.time()`` before it started), then their ids.
    Ask while the platform runs: its registry holds the port, so no other running
    platform's names are there. A build served from the cache returns an older image
    (perhaps another run's too): only its name is ours, so only the name goes; an id that
    keeps another name (another platform's) stays too (``remove_images``)."""
    listed = subprocess.run(
        ["docker", "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip

    def in_ours(name: str) -> bool:
        repository = re.split(r"[@]|:(?=[^:/]*$)", name, maxsplit=1)[0]
        return repository.startswith(f"{running.registry}/") or repository in also

    ids = sorted({i for i, repository in (line.split(" ") for line in listed if line)
                  if in_ours(repository)})  # fmt: skip
    if not ids:
        return []
    # An image pulled by digest has no tag: `docker images` shows it as `name <none>`, with
    # no digest either on Docker 20.10; its inspection lists its names, digests included.
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format",
         "{{.Id}} {{.Created}} {{json .RepoTags}} {{json .RepoDigests}}", *ids],
        capture_output=True, text=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    ours: list[str] = []
    bare: list[str] = []
    new: list[str] = []
    for line in inspected:
        image_id, created, tags, digests = line.split(" ", 3)
        names = [*json.loads(tags), *json.loads(digests)]
        ours += [name for name in names if in_ours(name)]
        if (docker_nanos(created) or 0) >= since * 1e9:
            new.append(image_id)
            # A bare name (no registry, no namespace) on an image this run made was given by
            # one of its builds; names in other registries are other platforms', and keep
            # their image.
            bare += [name for name in names if "/" not in name.partition("@")[0]]
    return ours + bare + sorted(new)


def remove_images(references: Sequence[str]) -> None:
    """Remove ``references`` in order, never forced: a name only untags (its image goes
    with its last name), and an id that still has a name (someone else's) stays."""
    for reference in references:
        subprocess.run(["docker", "rmi", reference], capture_output=True, timeout=120)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "data")
    try:
        yield running
    finally:
        stop_platform(running)


@pytest.fixture
def backend() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        started.append(Backend(name))
        return started[-1]

    try:
        yield start
    finally:
        for each in started:
            each.stop()
