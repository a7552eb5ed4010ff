"""Generated Dockerfiles build on the real engine and serve on 127.0.0.1:$PORT.

Each test copies an example app to tmp_path, writes the generated Dockerfile there, builds
it with the legacy builder, runs it with --init on the host network and GETs /. Everything
it creates (containers, images) is removed by id or tag, even when an assertion fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stackyard.images.dockerize import detect

from .conftest import free_port

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **BUILD_ENV}
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def require_base_image(name: str) -> None:
    if shutil.which("docker") is None or docker("info").returncode != 0:
        pytest.fail("no Docker engine answers: run scripts/setup-host first")
    if docker("image", "inspect", name).returncode != 0:
        pytest.fail(f"base image {name} is missing: run scripts/setup-host first")


class Served:
    """Builds one context and runs it; records what it made so that cleanup removes it."""

    def __init__(self) -> None:
        self.tags: list[str] = []
        self.containers: list[str] = []
        self.steps: set[str] = set()  # every image id the build printed (its stages too)

    def build(self, context: Path, timeout: float) -> str:
        tag = f"stackyard-test-dockerize:{uuid.uuid4().hex[:12]}"
        self.tags.append(tag)
        result = docker(
            "build", "--network", "host", "--force-rm", "-t", tag, str(context), timeout=timeout
        )
        self.steps |= set(re.findall(r"^ ---> ([0-9a-f]{12})$", result.stdout, re.MULTILINE))
        assert result.returncode == 0, f"docker build failed:\n{result.stdout}\n{result.stderr}"
        return tag

    def run(self, tag: str, port: int) -> str:
        argv = ["run", "-d", "--rm", "--init", "--network", "host"]
        argv += ["-e", f"PORT={port}", "-e", "HOST=127.0.0.1", tag]
        result = docker(*argv)
        assert result.returncode == 0, result.stderr
        container = result.stdout.strip()
        self.containers.append(container)
        return container

    def cleanup(self) -> None:
        for container in self.containers:
            docker("rm", "-f", container)
        for tag in self.tags:
            docker("rmi", "-f", tag)
        dangling = set(docker("images", "-q", "--filter", "dangling=true").stdout.split())
        if self.steps & dangling:  # a multi-stage build's earlier stages stay untagged
            docker("rmi", *sorted(self.steps & dangling))


@pytest.fixture
def served() -> Iterator[Served]:
    handle = Served()
    try:
        yield handle
    finally:
        handle.cleanup()


def get_when_up(port: int, container: str, timeout: float) -> httpx.Response:
    """GET http://127.0.0.1:port/ until it answers; fail with the container's logs if not."""
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2) as client:
        while True:
            try:
                return client.get(f"http://127.0.0.1:{port}/")
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    logs = docker("logs", container)
                    pytest.fail(
                        f"nothing answered on 127.0.0.1:{port}:\n{logs.stdout}{logs.stderr}"
                    )
                time.sleep(0.2)


def generate(example: str, tmp_path: Path) -> Path:
    context = tmp_path / example
    shutil.copytree(EXAMPLES / example, context)
    assert not (context / "Dockerfile").exists()
    (context / "Dockerfile").write_text(detect(context).dockerfile, encoding="utf-8")
    return context


def test_static_site_builds_and_serves_on_port(tmp_path: Path, served: Served) -> None:
    require_base_image("busybox:latest")
    context = generate("static-site", tmp_path)
    assert detect(context).kind == "static"
    tag = served.build(context, timeout=60)
    port = free_port()
    container = served.run(tag, port)
    response = get_when_up(port, container, timeout=10)
    assert response.status_code == 200
    assert "static site on Stackyard" in response.text


@pytest.mark.timeout(120)
def test_flask_app_installs_from_pypi_and_serves(tmp_path: Path, served: Served) -> None:
    """Needs PyPI from inside the build (docker build --network host); about 10-20 s."""
    require_base_image("python:3.11-slim")
    context = generate("flask-app", tmp_path)
    assert detect(context).kind == "flask"
    tag = served.build(context, timeout=90)
    port = free_port()
    container = served.run(tag, port)
    response = get_when_up(port, container, timeout=20)
    assert response.status_code == 200
    assert response.text == "hello from Flask on Stackyard\n"
