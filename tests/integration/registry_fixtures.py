"""A real CNCF distribution registry (htpasswd auth) and test images pushed into it.

The registry runs from the same spec `stackyard up` uses, on a free loopback port, and
is stopped by pid. Images are pushed with the docker CLI under a temporary DOCKER_CONFIG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackyard.platform.components import plan_registry
from stackyard.platform.supervisor import spawn, stop, wait_ready
from stackyard.settings import Settings
from tests.integration.conftest import free_port, require

ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


@dataclass(frozen=True)
class AccessEntry:
    method: str
    uri: str
    status: int


@dataclass
class LiveRegistry:
    endpoint: str
    username: str
    password: str
    log_file: Path
    docker_config: Path

    def access_log(self) -> list[AccessEntry]:
        """Every request the registry logged so far, in order."""
        text = self.log_file.read_text(encoding="utf-8", errors="replace")
        return [
            AccessEntry(m["method"], m["uri"], int(m["status"])) for m in ACCESS_LINE.finditer(text)
        ]

    def docker(self, *args: str) -> str:
        env = {**os.environ, "DOCKER_CONFIG": str(self.docker_config), "DOCKER_BUILDKIT": "0"}
        result = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=180
        )
        if result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def skopeo_digest(self, repository: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        result = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds",
             f"{self.username}:{self.password}",
             f"docker://{self.endpoint}/{repository}{sep}{reference}"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        digest: str = json.loads(result.stdout)["Digest"]
        return digest


@contextmanager
def running_registry(directory: Path) -> Iterator[LiveRegistry]:
    """A registry with its own data dir, logged in for docker; stopped by pid on exit."""
    require("docker-registry")
    settings = Settings(data_dir=directory / "data", registry_port=free_port())
    spec = plan_registry(settings, binary=shutil.which("docker-registry"))
    kept = spawn(spec)
    try:
        wait_ready(kept, 20)
        credentials = json.loads(
            (settings.data_dir / "registry-credentials.json").read_text(encoding="utf-8")
        )
        docker_config = directory / "docker-config"
        docker_config.mkdir()
        registry = LiveRegistry(
            endpoint=settings.registry_endpoint,
            username=credentials["username"],
            password=credentials["password"],
            log_file=spec.log_file,
            docker_config=docker_config,
        )
        subprocess.run(
            ["docker", "login", registry.endpoint, "-u", registry.username, "--password-stdin"],
            input=registry.password, text=True, capture_output=True, check=True,
            env={**os.environ, "DOCKER_CONFIG": str(docker_config)}, timeout=60,
        )  # fmt: skip
        yield registry
    finally:
        stop(kept)


def _registry_for_a_module() -> Iterator[LiveRegistry]:
    with (
        tempfile.TemporaryDirectory(prefix="stackyard-registry-") as tmp,
        running_registry(Path(tmp)) as registry,
    ):
        yield registry


@pytest.fixture(scope="module")
def live_registry() -> Iterator[LiveRegistry]:
    yield from _registry_for_a_module()


@pytest.fixture(scope="module")
def second_live_registry() -> Iterator[LiveRegistry]:
    """Another registry, for copies between two registries."""
    yield from _registry_for_a_module()


@dataclass(frozen=True)
class PushedImages:
    repository: str
    v1: str  # digest of busybox pushed as <repository>:v1
    v2: str  # digest of a second, different image pushed as <repository>:v2


def _push_digest(output: str) -> str:
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", output)
    if match is None:
        raise AssertionError(f"no digest in docker push output:\n{output}")
    return match.group(1)


@pytest.fixture(scope="module")
def pushed_images(live_registry: LiveRegistry) -> Iterator[PushedImages]:
    repository = "test/app"
    base = f"{live_registry.endpoint}/{repository}"
    built = f"stackyard-regtest-{os.getpid()}:latest"
    created = [f"{base}:v1", f"{base}:v2", built]
    try:
        live_registry.docker("tag", "busybox:latest", f"{base}:v1")
        v1 = _push_digest(live_registry.docker("push", f"{base}:v1"))
        with tempfile.TemporaryDirectory() as context:
            (Path(context) / "Dockerfile").write_text("FROM busybox:latest\nRUN echo x > /x\n")
            live_registry.docker("build", "--network", "host", "-q", "-t", built, context)
        live_registry.docker("tag", built, f"{base}:v2")
        v2 = _push_digest(live_registry.docker("push", f"{base}:v2"))
        yield PushedImages(repository, v1, v2)
    finally:
        for image in created:
            subprocess.run(["docker", "rmi", image], capture_output=True, check=False)
