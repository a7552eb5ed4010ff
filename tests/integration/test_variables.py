"""Variables and secrets on a real platform: a variable change redeploys the same image with
the new config, a secret reaches the task (environment and env file) and never its logs.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

SECRET = "tok-3f9a1c-never-in-a-log"

STACKFILE = """\
stages:
  - name: dev
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 1, stop_timeout: 3}
    variables: {GREETING: hi}
    env_file: {template: app.env.j2, path: /run/stackyard/env}
"""
TEMPLATE = "GREETING={{ GREETING }}\nAPI_TOKEN={{ API_TOKEN }}\n"
# Serves its environment and env file; with CRASH=1 it prints its token and exits.
DOCKERFILE = """\
FROM busybox:latest
COPY www /www
CMD ["sh", "-c", "if [ \\"$CRASH\\" = 1 ]; then echo \\"token is $API_TOKEN\\"; exit 3; fi; \
echo \\"GREETING=$GREETING\\" > /www/env.txt; cp /run/stackyard/env /www/file.txt; \
exec busybox httpd -f -p ${HOST}:${PORT} -h /www"]
"""


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("variables") / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def deployments(yard: RunningPlatform, stack: str) -> list[dict[str, Any]]:
    result = yard.cli("deployments", stack, "--stage", "dev", "--json")
    return list(json.loads(result.stdout))


def wait_deployment(yard: RunningPlatform, stack: str, number: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = next(d for d in deployments(yard, stack) if d["number"] == number)
        if found["status"] in ("COMPLETED", "FAILED"):
            return found
        time.sleep(0.5)
    raise AssertionError(f"deployment {number} did not end")


def served(yard: RunningPlatform, stack: str, path: str) -> str:
    url = json.loads(yard.cli("url", stack, "--stage", "dev", "--json").stdout)["url"]
    return httpx.get(url + path, timeout=5).text


def set_secret(yard: RunningPlatform, stack: str, name: str, value: str) -> dict[str, Any]:
    result = subprocess.run(
        [*STACKYARD, "secrets", "set", stack, name, "--json"],
        input=value,
        env=yard.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(result.stdout))


def test_variables_redeploy_the_same_image_and_secrets_stay_out_of_logs(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    stack = "envy"
    repo = GitRepo.from_example("hello", tmp_path / stack)
    repo.write("stackyard.yml", STACKFILE)
    repo.write("app.env.j2", TEMPLATE)
    repo.write("Dockerfile", DOCKERFILE)
    repo.commit("serve the environment")
    yard.cli("stacks", "create", stack, "--repo", str(repo.path))
    # Before the first build: a stack-wide secret the env file template needs.
    first = set_secret(yard, stack, "API_TOKEN", SECRET)
    assert SECRET not in json.dumps(first)
    assert first["secrets"][0]["version"] == 1

    yard.cli("build", stack, timeout=300)
    yard.cli("release", stack, "--stage", "dev")
    yard.cli("deploy", stack, "--stage", "dev", "--json", timeout=300)
    assert served(yard, stack, "/env.txt").strip() == "GREETING=hi"
    assert served(yard, stack, "/file.txt") == f"GREETING=hi\nAPI_TOKEN={SECRET}\n"

    change = json.loads(
        yard.cli("env", "set", stack, "GREETING=hola", "--stage", "dev", "--json").stdout
    )
    [redeploy] = change["redeployed"]
    assert redeploy["stage"] == "dev"
    assert wait_deployment(yard, stack, redeploy["deployment"])["status"] == "COMPLETED"
    releases = json.loads(yard.cli("releases", stack, "--stage", "dev", "--json").stdout)
    newest = next(r for r in releases if r["number"] == redeploy["release"])
    oldest = next(r for r in releases if r["number"] == 1)
    assert newest["digest"] == oldest["digest"]
    assert newest["config"]["variables"]["GREETING"] == "hola"
    assert newest["config"]["secrets"] == {"API_TOKEN": 1}
    assert served(yard, stack, "/env.txt").strip() == "GREETING=hola"
    assert "GREETING=hola\n" in served(yard, stack, "/file.txt")
    listing = yard.cli("env", "list", stack, "--stage", "dev").stdout
    assert "(secret, v1, set " in listing
    assert SECRET not in listing

    # Tasks that print the secret and crash: the deployment fails, and its log and reason
    # show the line with the secret masked.
    crash = json.loads(yard.cli("env", "set", stack, "CRASH=1", "--stage", "dev", "--json").stdout)
    failed = wait_deployment(yard, stack, crash["redeployed"][0]["deployment"])
    assert failed["status"] == "FAILED"
    log = Path(failed["log_path"]).read_text(encoding="utf-8")
    assert "token is ***" in log
    assert SECRET not in log
    assert SECRET not in failed["reason"]
    for path in (yard.data_dir / "logs").rglob("*.log"):
        assert SECRET not in path.read_text(encoding="utf-8", errors="replace"), path
    assert SECRET.encode() not in (yard.data_dir / "stackyard.db").read_bytes()
