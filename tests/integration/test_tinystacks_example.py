"""examples/tinystacks, a TinyStacks-style app (build.yml and release.yml using
$ECR_IMAGE_URL), built, released and deployed through a real platform, as
docs/migrating-from-tinystacks.md describes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RunningPlatform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration


@pytest.fixture
def engine_images(platform: RunningPlatform) -> Iterator[None]:
    """Remove what the specs leave in the engine (images a build spec builds stay there),
    once the platform and its tasks, which use them, are gone."""
    yield
    stop_platform(platform)
    names = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    ours = [n for n in names if n.startswith(("tiny-built:", f"{platform.registry}/tiny:"))]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, timeout=120)


def cli_json(platform: RunningPlatform, *args: str) -> Any:
    return json.loads(platform.cli(*args, "--json", timeout=300).stdout)


def test_tinystacks_build_and_release_specs_run_unchanged_but_for_the_login(
    platform: RunningPlatform, tmp_path: Path, engine_images: None
) -> None:
    repo = GitRepo.from_example("tinystacks", tmp_path / "tiny")
    platform.cli("stacks", "create", "tiny", "--repo", str(repo.path))

    build = cli_json(platform, "build", "tiny")

    assert build["status"] == "SUCCEEDED", build
    assert build["kind"] == "buildspec"
    images = cli_json(platform, "images", "tiny")["images"]
    assert [sorted(image["tags"]) for image in images] == [sorted(["latest", repo.head()])]
    log = Path(build["log_path"]).read_text()
    assert f"The push refers to repository [{platform.registry}/tiny]" in log
    assert "Successfully tagged tiny-built:latest" in log

    dev = cli_json(platform, "release", "tiny", "--stage", "dev")
    staging = cli_json(platform, "release", "tiny", "--stage", "staging")

    assert dev["source"] == staging["source"] == "release.yml"
    assert dev["digest"] == staging["digest"] == build["digest"]
    assert "docker pull" in Path(staging["log_path"]).read_text()

    deployment = cli_json(platform, "deploy", "tiny", "--stage", "dev")

    assert deployment["status"] == "COMPLETED", deployment
    url = cli_json(platform, "url", "tiny", "--stage", "dev")["url"]
    page = httpx.get(url, timeout=5).text
    assert "hello from a TinyStacks app on Stackyard" in page
    assert "VERSION=v1" in page
    assert httpx.get(f"{url}/ping", timeout=5).text.strip() == "pong"
