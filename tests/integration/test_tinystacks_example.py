"""examples/tinystacks: TinyStacks' build.yml and a release.yml in its shape, with their
``aws ecr get-login-password`` logins and the post_build that would deploy to ECS, taken
unchanged from ``git push`` to two stages serving, as docs/migrating-from-tinystacks.md
describes (tests/unit/test_docs_tinystacks.py keeps the guide's copies the same bytes)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo
from .test_pipelines import wait_run

pytestmark = pytest.mark.integration


@pytest.fixture
def engine_images(platform: RunningPlatform) -> Iterator[None]:
    """Remove what the specs leave in the engine (images a build spec builds stay there),
    once the platform and its tasks, which use them, are gone."""
    yield
    stop_platform(platform)
    remove_images(platform)


def remove_images(platform: RunningPlatform) -> None:
    names = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    ours = [n for n in names if n.startswith(("builtimage:", f"{platform.registry}/tiny:"))]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, timeout=120)


def cli_json(platform: RunningPlatform, *args: str) -> Any:
    return json.loads(platform.cli(*args, "--json", timeout=300).stdout)


def test_tinystacks_specs_go_unchanged_from_git_push_to_serving(
    platform: RunningPlatform, tmp_path: Path, engine_images: None
) -> None:
    repo = GitRepo.from_example("tinystacks", tmp_path / "tiny")
    example = Path(__file__).parents[2] / "examples" / "tinystacks"
    for spec in ("build.yml", "release.yml"):
        assert (repo.path / spec).read_bytes() == (example / spec).read_bytes()
    platform.cli("stacks", "create", "tiny", "--repo", str(repo.path))
    pushed = repo.push(platform.cli("remote", "tiny").stdout.strip())
    assert "pipeline run 1 started" in pushed

    run = wait_run(platform, "tiny", 1, ("WAITING", "FAILED"), timeout=300)

    assert run["status"] == "WAITING", run  # prod waits for its approval
    password = json.loads((platform.data_dir / "registry-credentials.json").read_text())["password"]
    build = cli_json(platform, "builds", "tiny")[0]
    assert build["status"] == "SUCCEEDED"
    assert build["kind"] == "buildspec"
    log = Path(build["log_path"]).read_text()
    assert "Login Succeeded" in log
    assert "Successfully tagged builtimage:latest" in log
    assert "not supported by Stackyard" not in log
    for stage in ("dev", "staging"):
        release = cli_json(platform, "releases", "tiny", "--stage", stage)[0]
        assert release["source"] == "release.yml"
        assert release["digest"] == build["digest"]
        log = Path(release["log_path"]).read_text()
        assert "Login Succeeded" in log
        assert f"Service is not ready yet: {stage} is tagged in the repository" in log
        assert "Phase complete: post_build State: SUCCEEDED" in log
        assert password not in log
        url = cli_json(platform, "url", "tiny", "--stage", stage)["url"]
        page = httpx.get(url, timeout=5).text
        assert "hello from a TinyStacks app on Stackyard" in page
        assert httpx.get(f"{url}/ping", timeout=5).text.strip() == "pong"


def test_on_host_the_aws_logins_reach_the_registry_itself(tmp_path: Path) -> None:
    """--builds-on-host: no build proxy answers ``docker login``; the engine asks the
    registry, which takes the password that ``aws ecr get-login-password`` prints for the
    user ``AWS``."""
    platform = start_platform(tmp_path / "data", up_args=["--builds-on-host"])
    try:
        repo = GitRepo.from_example("tinystacks", tmp_path / "tiny")
        platform.cli("stacks", "create", "tiny", "--repo", str(repo.path))
        build = cli_json(platform, "build", "tiny")
        assert build["status"] == "SUCCEEDED", build
        dev = cli_json(platform, "release", "tiny", "--stage", "dev")
        assert (dev["source"], dev["digest"]) == ("release.yml", build["digest"])
        password = json.loads((platform.data_dir / "registry-credentials.json").read_text())
        for log_path in (build["log_path"], dev["log_path"]):
            log = Path(log_path).read_text()
            assert "Commands run on this host" in log
            assert "Login Succeeded" in log
            assert password["password"] not in log
    finally:
        stop_platform(platform)
        remove_images(platform)
