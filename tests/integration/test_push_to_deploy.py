"""The whole promise, end to end and all real: ``git push`` → dev → staging → approval →
prod; then a runtime variable change → a new release in every stage, same digest.

Also: a platform whose engine does not answer says so, by name, instead of hanging.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo
from .test_pipelines import STAGES, run_record, wait_run

pytestmark = pytest.mark.integration

SERVES_GREETING = "FROM busybox:latest\nCOPY www /www\n" + (
    'CMD ["sh", "-c", "echo \\"GREETING=$GREETING\\" > /www/greeting.txt; '
    'exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]\n'
)


def releases(yard: RunningPlatform, stack: str, stage: str) -> list[dict[str, Any]]:
    return list(json.loads(yard.cli("releases", stack, "--stage", stage, "--json").stdout))


def greeting(yard: RunningPlatform, stack: str, stage: str) -> str:
    url = json.loads(yard.cli("url", stack, "--stage", stage, "--json").stdout)["url"]
    return httpx.get(f"{url}/greeting.txt", timeout=5).text.strip()


def test_git_push_to_prod_then_a_variable_change_redeploys_every_stage(tmp_path: Path) -> None:
    yard = start_platform(tmp_path / "data")
    try:
        repo = GitRepo.from_example("hello", tmp_path / "shop")
        repo.write("stackyard.yml", STAGES)
        repo.write("Dockerfile", SERVES_GREETING)
        repo.commit("three stages; the app shows $GREETING")
        yard.cli("stacks", "create", "shop", "--repo", str(repo.path))
        remote = yard.cli("remote", "shop").stdout.strip()
        repo.git("remote", "add", "stackyard", remote)
        pushed = subprocess.run(
            ["git", "push", "stackyard", "main"],
            cwd=repo.path, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        assert "pipeline run 1 started" in pushed.stderr

        waiting = wait_run(yard, "shop", 1, ("WAITING", "FAILED"))
        assert waiting["status"] == "WAITING", waiting
        assert waiting["trigger"] == "git push"
        yard.cli("approve", "shop", "--stage", "prod")
        done = wait_run(yard, "shop", 1, ("SUCCEEDED", "FAILED"))
        assert done["status"] == "SUCCEEDED", done
        digest = releases(yard, "shop", "prod")[0]["digest"]
        for stage in ("dev", "staging", "prod"):
            assert [r["digest"] for r in releases(yard, "shop", stage)] == [digest]
            assert greeting(yard, "shop", stage) == "GREETING="

        changed = json.loads(yard.cli("env", "set", "shop", "GREETING=hola", "--json").stdout)
        assert {r["stage"] for r in changed["redeployed"]} == {"dev", "staging", "prod"}
        for stage in ("dev", "staging", "prod"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state = json.loads(yard.cli("check", "shop", "--stage", stage, "--json").stdout)
                if state["converged"] and state["release"] == 2:
                    break
                time.sleep(0.3)
            newest, first = releases(yard, "shop", stage)[:2]
            assert newest["number"] == 2
            assert newest["digest"] == first["digest"] == digest  # same image, new config
            assert newest["config"]["variables"]["GREETING"] == "hola"
            assert greeting(yard, "shop", stage) == "GREETING=hola"
        assert run_record(yard, "shop", 1)["status"] == "SUCCEEDED"
    finally:
        stop_platform(yard)


def test_an_engine_that_does_not_answer_is_named(tmp_path: Path) -> None:
    yard = start_platform(tmp_path / "data")
    try:
        repo = GitRepo.from_example("hello", tmp_path / "lonely")
        repo.write("stackyard.yml", STAGES)
        repo.commit("stages")
        yard.cli("stacks", "create", "lonely", "--repo", str(repo.path))
        yard.cli("build", "lonely", timeout=300)
        yard.cli("release", "lonely", "--stage", "dev")
        yard.cli("down")
        env = {**yard.env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
        ports = ["--api-port", yard.api_url.rsplit(":", 1)[1],
                 "--registry-port", yard.registry.rsplit(":", 1)[1]]  # fmt: skip
        subprocess.run([*STACKYARD, "up", "-d", *ports], env=env, check=True, timeout=60)
        result = subprocess.run(
            [*STACKYARD, "deploy", "lonely", "--stage", "dev"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1
        assert "nonexistent/docker.sock did not answer" in result.stderr
        assert "DOCKER_HOST" in result.stderr
        assert "Traceback" not in result.stderr
        listing = json.loads(yard.cli("deployments", "lonely", "--stage", "dev", "--json").stdout)
        assert listing == []  # refused up front: nothing was queued
    finally:
        stop_platform(yard)
