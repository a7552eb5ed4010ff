"""examples/tinystacks: TinyStacks' build.yml and a release.yml in its shape, with their
``aws ecr get-login-password`` logins and the post_build that would deploy to ECS, taken
unchanged from ``git push`` to two stages serving, as docs/migrating-from-tinystacks.md
describes (tests/unit/test_docs_tinystacks.py keeps the guide's copies the same bytes)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackyard.images.registry import RegistryClient

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo
from .test_pipelines import wait_run
from .token_registry import token_registry

pytestmark = pytest.mark.integration


@pytest.fixture
def engine_images(platform: RunningPlatform) -> Iterator[None]:
    """Remove what the specs leave in the engine (images a build spec builds stay there),
    by id, once the platform and its tasks, which use them, are gone: the images named in
    its registry (the spec's pushes) and made from now on, and their ``builtimage`` name."""
    since = time.time()
    yield
    stop_platform(platform, images_since=since)


def cli_json(platform: RunningPlatform, *args: str) -> Any:
    return json.loads(platform.cli(*args, "--json", timeout=300).stdout)


def test_tinystacks_specs_go_unchanged_from_git_push_to_serving(
    platform: RunningPlatform, tmp_path: Path, engine_images: None
) -> None:
    """Two stacks with TinyStacks' specs on one platform, pushed at once (issue #16): both
    build ``builtimage``, a name each run holds alone and that goes when the run ends (as
    in CodeBuild's fresh environment), so each serves its own page."""
    example = Path(__file__).parents[2] / "examples" / "tinystacks"
    pages = {
        "tiny": "hello from a TinyStacks app on Stackyard",  # the example's own page
        "tiny2": "hello from another TinyStacks app on Stackyard",
    }
    repos: dict[str, GitRepo] = {}
    for stack, page in pages.items():
        repo = GitRepo.from_example("tinystacks", tmp_path / stack)
        for spec in ("build.yml", "release.yml"):
            assert (repo.path / spec).read_bytes() == (example / spec).read_bytes()
        index = (repo.path / "www" / "index.html").read_text()
        repo.write("www/index.html", index.replace(pages["tiny"], page))
        repo.commit(f"{stack}'s own page")
        platform.cli("stacks", "create", stack, "--repo", str(repo.path))
        repos[stack] = repo
    for stack, repo in repos.items():
        pushed = repo.push(platform.cli("remote", stack).stdout.strip())
        assert "pipeline run 1 started" in pushed

    password = json.loads((platform.data_dir / "registry-credentials.json").read_text())["password"]
    digests = set()
    for stack, page in pages.items():
        run = wait_run(platform, stack, 1, ("WAITING", "FAILED"), timeout=300)
        build = cli_json(platform, "builds", stack)[0]
        log = Path(build["log_path"]).read_text()
        assert run["status"] == "WAITING", (run, log)  # prod waits for its approval
        assert build["status"] == "SUCCEEDED"
        assert build["kind"] == "buildspec"
        assert "Login Succeeded" in log
        assert "Successfully tagged builtimage:latest" in log
        assert "not supported by Stackyard" not in log
        digests.add(build["digest"])
        for stage in ("dev", "staging"):
            release = cli_json(platform, "releases", stack, "--stage", stage)[0]
            assert release["source"] == "release.yml"
            assert release["digest"] == build["digest"]
            log = Path(release["log_path"]).read_text()
            assert "Login Succeeded" in log
            assert f"Service is not ready yet: {stage} is tagged in the repository" in log
            assert "Phase complete: post_build State: SUCCEEDED" in log
            assert password not in log
            url = cli_json(platform, "url", stack, "--stage", stage)["url"]
            served = httpx.get(url, timeout=5).text
            assert page in served, (stack, stage, served)
            assert httpx.get(f"{url}/ping", timeout=5).text.strip() == "pong"
    assert len(digests) == 2
    # Each build's builtimage went with its run: no stack's name is left on the engine.
    names = platform.data_dir / "build-image-names.json"
    deadline = time.monotonic() + 30
    while json.loads(names.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(names.read_text()) == {}


def test_on_host_the_aws_logins_reach_the_registry_itself(tmp_path: Path) -> None:
    """--builds-on-host: no build proxy answers ``docker login``; the engine asks the
    registry, which takes the password that ``aws ecr get-login-password`` prints for the
    user ``AWS``. So does a target's own registry (user ``AWS``, as ECR): the release.yml's
    regional block pushes prod's image there itself, with the digest the build made."""
    with token_registry(tmp_path / "apac-registry", username="AWS") as apac:
        started = time.time()
        platform = start_platform(tmp_path / "data", up_args=["--builds-on-host"])
        regional = f"{apac.endpoint}/asia/tiny"
        try:
            subprocess.run(
                [*STACKYARD, "registries", "add", "apac", "--url", f"{apac.endpoint}/asia",
                 "--username", apac.username, "--password-stdin"],
                input=apac.password + "\n", env=platform.env, capture_output=True, text=True,
                timeout=120, check=True,
            )  # fmt: skip
            platform.cli("targets", "add", "apac", "--docker", "unix:///var/run/docker.sock",
                         "--registry", "apac", "--region", "ap-east")  # fmt: skip
            repo = GitRepo.from_example("tinystacks", tmp_path / "tiny")
            repo.write("stackyard.yml", ON_HOST_STAGES)
            repo.commit("prod runs on target apac")
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

            prod = cli_json(platform, "release", "tiny", "--stage", "prod")
            assert (prod["source"], prod["digest"]) == ("release.yml", build["digest"])
            log = Path(prod["log_path"]).read_text()
            assert f"prod runs in ap-east: pushing to {apac.endpoint}" in log
            assert log.count("Login Succeeded") == 2  # the platform's registry, then apac's
            assert f"prod: digest: {build['digest']}" in log  # the host's own push there
            for secret in (password["password"], apac.password):
                assert secret not in log
            with RegistryClient(
                apac.endpoint, username=apac.username, password=apac.password
            ) as client:
                assert client.resolve("asia/tiny", "prod") == build["digest"]
        finally:
            stop_platform(platform, images_since=started, also=[regional])


# dev on the platform's own target, prod on target apac (a registry of its own).
ON_HOST_STAGES = """\
stages:
  - name: dev
    health: {path: /ping}
  - name: prod
    target: apac
    health: {path: /ping}
"""
