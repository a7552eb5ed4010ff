"""Backup and restore on a real platform: three stacks with variables, secrets, releases
and a git remote are backed up while the platform runs; the platform and its tasks go
away; the backup is restored into a fresh data directory and started on other ports.
Every stage then serves the same digest with the same config, and the secrets decrypt.
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
from .test_variables import set_secret

pytestmark = pytest.mark.integration

HEALTH = "health: {path: /env.txt, interval: 0.5, timeout: 1, retries: 2, start_period: 2}"
DEPLOY = "deploy: {drain_seconds: 0, stop_timeout: 2}"
STACKFILE = f"""\
stages:
  - name: dev
    {HEALTH}
    {DEPLOY}
  - name: prod
    {HEALTH}
    {DEPLOY}
"""
# Serves its environment: a variable and a secret the platform decrypts into the task.
DOCKERFILE = """\
FROM busybox:latest
COPY www /www
CMD ["sh", "-c", "echo \\"$GREETING $API_TOKEN\\" > /www/env.txt; \
exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]
"""
STACKS = {"alpha": ("dev", "prod"), "beta": ("dev",), "gamma": ("dev",)}


def served(yard: RunningPlatform, stack: str, stage: str) -> str:
    url = json.loads(yard.cli("url", stack, "--stage", stage, "--json").stdout)["url"]
    return httpx.get(url + "/env.txt", timeout=5).text.strip()


def check(yard: RunningPlatform, stack: str, stage: str) -> dict[str, Any]:
    return dict(json.loads(yard.cli("check", stack, "--stage", stage, "--json").stdout))


def converged(
    yard: RunningPlatform, stack: str, stage: str, timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = check(yard, stack, stage)
        if found["converged"]:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{stack} {stage} did not converge: {found}")


def releases(yard: RunningPlatform, stack: str) -> list[tuple[str, int, str, dict[str, Any]]]:
    found = json.loads(yard.cli("releases", stack, "--json").stdout)
    return sorted((r["stage"], r["number"], r["digest"], r["config"]) for r in found)


def make_stack(yard: RunningPlatform, stack: str, tmp_path: Path) -> GitRepo:
    repo = GitRepo.from_example("hello", tmp_path / stack)
    repo.write("Dockerfile", DOCKERFILE)
    repo.write("stackyard.yml", STACKFILE)
    repo.write("www/index.html", f"<p>{stack}</p>\n")
    repo.commit(f"{stack}: serve its environment")
    yard.cli("stacks", "create", stack, "--repo", str(repo.path))
    set_secret(yard, stack, "API_TOKEN", f"token-of-{stack}-e81c")
    yard.cli("env", "set", stack, f"GREETING=hello-{stack}")
    yard.cli("build", stack, timeout=300)
    for stage in STACKS[stack]:
        yard.cli("release", stack, "--stage", stage)
        yard.cli("deploy", stack, "--stage", stage, timeout=300)
    return repo


def test_a_restored_platform_serves_every_stage_as_before(tmp_path: Path) -> None:
    original = start_platform(tmp_path / "original")
    try:
        repos = {stack: make_stack(original, stack, tmp_path) for stack in STACKS}
        # A second release of one stage: the new config, the same image.
        original.cli("env", "set", "alpha", "GREETING=hola-alpha", "--stage", "dev")
        assert converged(original, "alpha", "dev")["release"] == 2
        # The platform's git remote holds a branch (not the stack's: no run starts).
        remote = original.cli("remote", "alpha").stdout.strip()
        repos["alpha"].git("push", "-q", remote, "HEAD:refs/heads/feature")
        before = {
            (stack, stage): (
                converged(original, stack, stage)["digest"],
                served(original, stack, stage),
            )
            for stack, stages in STACKS.items()
            for stage in stages
        }
        before_releases = {stack: releases(original, stack) for stack in STACKS}
        # A token of a person's (checked against its hash under the tokens' pepper).
        issued = original.cli("tokens", "create", "--stack", "alpha", "--scope", "deploy", "--json")
        deploy_token = json.loads(issued.stdout)["token"]
        assert before[("alpha", "dev")][1] == "hola-alpha token-of-alpha-e81c"
        assert before[("beta", "dev")][1] == "hello-beta token-of-beta-e81c"

        backup = tmp_path / "yard.tar"
        started = time.monotonic()
        taken = json.loads(original.cli("backup", str(backup), "--json").stdout)
        backup_seconds = time.monotonic() - started
        assert taken["manifest"]["stacks"] == sorted(STACKS)
        assert taken["manifest"]["remotes"] == {"alpha": "refs/heads/main"}
        assert taken["manifest"]["images"] is True
        assert backup.stat().st_mode & 0o777 == 0o600
    finally:
        stop_platform(original)  # its tasks go too: nothing of it serves any more

    fresh = tmp_path / "restored"
    started = time.monotonic()
    result = subprocess.run(
        [*STACKYARD, "restore", str(backup), "--data-dir", str(fresh), "--json"],
        env=original.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    restore_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    restored = start_platform(fresh)
    try:
        assert restored.registry != original.registry
        for (stack, stage), (digest, text) in before.items():
            after = converged(restored, stack, stage)
            assert after["digest"] == digest, (stack, stage)
            assert all(task["digest"] == digest for task in after["tasks"])
            assert served(restored, stack, stage) == text
        for stack in STACKS:
            assert releases(restored, stack) == before_releases[stack]
        listing = restored.cli("secrets", "list", "alpha", "--json").stdout
        assert "token-of-alpha" not in listing  # still write-only
        refs = subprocess.run(
            ["git", f"--git-dir={fresh / 'remotes' / 'alpha.git'}", "for-each-ref"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "refs/heads/feature" in refs
        assert restored.token == original.token  # restored, see docs/decisions.md
        as_deployer = subprocess.run(
            [*STACKYARD, "releases", "alpha", "--json"],
            env={**restored.env, "STACKYARD_TOKEN": deploy_token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert as_deployer.returncode == 0, as_deployer.stderr  # the pepper came back
        build_log = restored.cli("logs", "beta", "--build", "1").stdout
        assert "build SUCCEEDED" in build_log
        # A release reads its commit's files from the git cache, which a backup leaves out:
        # it fetches the commit again, from the platform's own git remote (alpha's commit
        # was pushed there) or else the stack's repository (beta's). Before, it failed:
        # "stack 'alpha' has no repository cache".
        assert not (fresh / "git").exists() or not any((fresh / "git").iterdir())
        for stack, stage in (("alpha", "prod"), ("beta", "dev")):
            made = json.loads(restored.cli("release", stack, "--stage", stage, "--json").stdout)
            assert made["digest"] == before[(stack, stage)][0], made
    finally:
        stop_platform(restored)
    print(f"\nbackup {backup_seconds:.1f} s, restore {restore_seconds:.1f} s")
