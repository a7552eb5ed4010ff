"""Pipeline runs end to end against the real engine, registry, Caddy and git.

A run builds once, then gates, releases and deploys each stage in order. One platform
serves the module; each test uses its own stack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

STAGES = """\
stages:
  - name: dev
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
  - name: staging
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
  - name: prod
    promotion: approval
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 0.5, stop_timeout: 3}
"""


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("pipes") / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def new_stack(yard: RunningPlatform, tmp_path: Path, name: str) -> GitRepo:
    repo = GitRepo.from_example("hello", tmp_path / name)
    repo.write("stackyard.yml", STAGES)
    repo.commit("three stages, prod behind an approval")
    yard.cli("stacks", "create", name, "--repo", str(repo.path))
    return repo


def api(yard: RunningPlatform, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {yard.token}"}
    response = httpx.request(method, yard.api_url + path, headers=headers, timeout=60, **kwargs)
    assert response.status_code < 400, response.text
    return response.json()


def run_record(yard: RunningPlatform, stack: str, number: int) -> dict[str, Any]:
    return dict(api(yard, "GET", f"/api/v1/stacks/{stack}/runs/{number}"))


def wait_run(
    yard: RunningPlatform, stack: str, number: int, until: tuple[str, ...], timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    record = run_record(yard, stack, number)
    while record["status"] not in until and time.monotonic() < deadline:
        time.sleep(0.3)
        record = run_record(yard, stack, number)
    assert record["status"] in until, record
    return record


def served(yard: RunningPlatform, stack: str, stage: str) -> str:
    url = json.loads(yard.cli("url", stack, "--stage", stage, "--json").stdout)["url"]
    return httpx.get(url + "/", timeout=5).text


def test_a_run_goes_through_every_stage_and_waits_for_prod_approval(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    new_stack(yard, tmp_path, "flow")
    result = yard.cli("deploy", "flow", "--json", timeout=300)
    run = json.loads(result.stdout)
    assert run["status"] == "WAITING"
    kinds = [(s["kind"], s["stage"], s["status"]) for s in run["steps"]]
    assert kinds[0] == ("build", "", "SUCCEEDED")
    assert ("gate", "prod", "WAITING") in kinds
    assert ("deploy", "staging", "SUCCEEDED") in kinds
    assert ("release", "prod", "PENDING") in kinds
    assert "VERSION=v1" in served(yard, "flow", "dev")
    assert "VERSION=v1" in served(yard, "flow", "staging")

    approved = yard.cli("approve", "flow", "--stage", "prod")
    assert "Approved prod for run 1" in approved.stdout
    done = wait_run(yard, "flow", 1, ("SUCCEEDED", "FAILED"))
    assert done["status"] == "SUCCEEDED", done
    assert "VERSION=v1" in served(yard, "flow", "prod")
    check = json.loads(yard.cli("check", "flow", "--stage", "prod", "--json").stdout)
    assert check["converged"]
    digests = {s["message"] for s in done["steps"] if s["kind"] == "release"}
    assert digests == {check["digest"]}  # one image, promoted through every stage

    again = yard.cli("approve", "flow", "--stage", "prod", check=False)
    assert again.returncode == 2
    assert (
        "prod of flow is not waiting for an approval; no run is waiting at its gate" in again.stderr
    )


def test_a_failed_build_stops_the_run_and_names_the_step(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    repo = new_stack(yard, tmp_path, "broken-run")
    dockerfile = (
        "# two stages, a continued line and a comment: the engine's step 5 is line 8\n"
        "FROM busybox:latest AS first\n"
        "RUN echo one \\\n"
        "    two\n"
        "\n"
        "FROM busybox:latest\n"
        "COPY --from=first /bin/sh /sh-copy\n"
        "RUN exit 7\n"
    )
    repo.write("Dockerfile", dockerfile)
    repo.commit("broken")
    result = yard.cli("deploy", "broken-run", "--json", check=False, timeout=300)
    assert result.returncode == 1
    assert "run 1 of broken-run FAILED: build 1 failed" in result.stderr
    assert "docker build failed at Dockerfile:8 (step 5/5: RUN exit 7): " in result.stderr
    record = run_record(yard, "broken-run", 1)
    assert [s["status"] for s in record["steps"]] == ["FAILED"]


def test_a_webhook_delivery_received_twice_builds_its_push_once(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    """GitHub's "Redeliver" sends a push again with its delivery id: the platform's store
    remembers which run each delivery started (its unique index), and answers with it."""
    repo = new_stack(yard, tmp_path, "redelivered")
    secret = json.loads(yard.cli("webhook", "redelivered", "--json").stdout)["secret"]
    body = json.dumps(
        {"ref": "refs/heads/main", "before": "0" * 40, "after": repo.head(),
         "pusher": {"name": "octocat"}, "commits": []}
    ).encode()  # fmt: skip
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "9f1c-redelivered",
        "X-Hub-Signature-256": f"sha256={digest}",
        "Content-Type": "application/json",
    }
    url = f"{yard.api_url}/api/v1/hooks/github/redelivered"
    first = httpx.post(url, content=body, headers=headers, timeout=30)
    again = httpx.post(url, content=body, headers=headers, timeout=30)  # fmt: skip
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["run"]["number"] == first.json()["run"]["number"] == 1
    assert "was received before: pipeline run 1" in again.json()["message"]
    runs = json.loads(yard.cli("runs", "redelivered", "--json").stdout)
    assert [run["number"] for run in runs] == [1]
    wait_run(yard, "redelivered", 1, ("WAITING", "FAILED", "SUCCEEDED"))


def test_a_newer_run_supersedes_a_queued_one_and_runs_never_interleave(
    yard: RunningPlatform, tmp_path: Path
) -> None:
    new_stack(yard, tmp_path, "busy")
    first = api(yard, "POST", "/api/v1/stacks/busy/runs", json={})
    second = api(yard, "POST", "/api/v1/stacks/busy/runs", json={})
    third = api(yard, "POST", "/api/v1/stacks/busy/runs", json={})
    assert (first["number"], second["number"], third["number"]) == (1, 2, 3)
    assert run_record(yard, "busy", 2)["status"] == "SUPERSEDED"
    one = wait_run(yard, "busy", 1, ("WAITING", "SUPERSEDED", "FAILED"))
    three = wait_run(yard, "busy", 3, ("WAITING", "FAILED"))
    assert three["status"] == "WAITING"
    # Run 3 reached the prod gate, so run 1 cannot deploy prod over it.
    one = wait_run(yard, "busy", 1, ("SUPERSEDED",))
    assert "run 3 reached" in one["error"]
    builds = {b["number"]: b for b in json.loads(yard.cli("builds", "busy", "--json").stdout)}
    assert len(builds) == 2
    assert builds[1]["finished_at"] <= builds[2]["started_at"]


def test_cancel_a_waiting_run(yard: RunningPlatform, tmp_path: Path) -> None:
    new_stack(yard, tmp_path, "halt")
    yard.cli("deploy", "halt", timeout=300)
    cancelled = json.loads(yard.cli("cancel", "halt", "--run", "1", "--json").stdout)
    assert cancelled["status"] == "CANCELLED"
    prod = [s for s in cancelled["steps"] if s["stage"] == "prod"]
    assert {s["status"] for s in prod} == {"CANCELLED"}
    url = json.loads(yard.cli("url", "halt", "--stage", "prod", "--json").stdout)
    assert url["url"] is None


def test_deploy_an_older_commit_and_promote_by_hand(yard: RunningPlatform, tmp_path: Path) -> None:
    repo = new_stack(yard, tmp_path, "oldies")
    first = repo.head()
    repo.set_version("v2")
    run = json.loads(yard.cli("deploy", "oldies", "--commit", first, "--json", timeout=300).stdout)
    assert run["commit_sha"] == first
    assert "VERSION=v1" in served(yard, "oldies", "dev")
    promoted = json.loads(
        yard.cli("promote", "oldies", "--to", "prod", "--json", timeout=300).stdout
    )
    assert promoted["status"] == "SUCCEEDED"
    assert promoted["trigger"] == "promote staging -> prod"
    assert "VERSION=v1" in served(yard, "oldies", "prod")
    wrong = yard.cli("promote", "oldies", "--to", "prod", "--from", "dev", check=False)
    assert wrong.returncode == 2
    assert "prod promotes from staging, not dev" in wrong.stderr


def test_logs_of_every_step(yard: RunningPlatform, tmp_path: Path) -> None:
    new_stack(yard, tmp_path, "loud")
    yard.cli("deploy", "loud", timeout=300)
    build_log = yard.cli("logs", "loud", "--build", "1").stdout
    assert "build SUCCEEDED" in build_log
    deployment_log = yard.cli("logs", "loud", "--deployment", "1", "--stage", "dev", "-f").stdout
    assert "deployment COMPLETED" in deployment_log
    run_log = yard.cli("logs", "loud", "--run", "1").stdout
    assert "waiting for an approval to enter prod" in run_log
    password = json.loads((yard.data_dir / "registry-credentials.json").read_text())["password"]
    for text in (build_log, deployment_log, run_log):
        assert password not in text
    both = yard.cli("logs", "loud", "--build", "1", "--run", "1", check=False)
    assert both.returncode == 2
    assert "say which log" in both.stderr


def test_killing_the_server_mid_run_resumes_it(tmp_path: Path) -> None:
    yard = start_platform(tmp_path / "data")
    try:
        new_stack(yard, tmp_path, "sturdy")
        api(yard, "POST", "/api/v1/stacks/sturdy/runs", json={})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once dev's deployment is under way
            steps = run_record(yard, "sturdy", 1)["steps"]
            if any(s["kind"] == "deploy" and s["status"] == "RUNNING" for s in steps):
                break
            time.sleep(0.1)
        subprocess.run(["kill", "-9", str(yard.pid)], check=True)
        time.sleep(0.5)
        yard.up_again()
        record = wait_run(yard, "sturdy", 1, ("WAITING", "FAILED"))
        assert record["status"] == "WAITING", record
        log = yard.cli("logs", "sturdy", "--run", "1").stdout
        assert "INTERRUPTED" in log
        builds = json.loads(yard.cli("builds", "sturdy", "--json").stdout)
        assert len(builds) == 1  # no duplicate build
        for stage in ("dev", "staging"):
            deployments = json.loads(
                yard.cli("deployments", "sturdy", "--stage", stage, "--json").stdout
            )
            assert [d["status"] for d in deployments] == ["COMPLETED"]  # no duplicate
            state = json.loads(yard.cli("check", "sturdy", "--stage", stage, "--json").stdout)
            assert state["converged"], state
    finally:
        stop_platform(yard)


def test_a_run_waiting_at_a_gate_waits_again_after_down_and_up(tmp_path: Path) -> None:
    yard = start_platform(tmp_path / "data")
    try:
        new_stack(yard, tmp_path, "patient")
        run = json.loads(yard.cli("deploy", "patient", "--json", timeout=300).stdout)
        assert run["status"] == "WAITING"
        yard.cli("down")
        yard.up_again()
        log = yard.cli("logs", "patient", "--run", "1").stdout
        assert "the platform is stopping; this run carries on when it starts again" in log
        assert run_record(yard, "patient", 1)["status"] == "WAITING"
        approved = yard.cli("approve", "patient", "--stage", "prod")
        assert "Approved prod for run 1" in approved.stdout
        done = wait_run(yard, "patient", 1, ("SUCCEEDED", "FAILED"))
        assert done["status"] == "SUCCEEDED", done
        assert "VERSION=v1" in served(yard, "patient", "prod")
        assert "INTERRUPTED" in yard.cli("logs", "patient", "--run", "1").stdout
    finally:
        stop_platform(yard)
