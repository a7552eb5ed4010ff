"""A team on a real platform, through the `stackyard` command and a real `git push`.

The bootstrap admin adds people; each logs in with their own token; `stackyard remote`
gives a URL whose token pushes to one stack and nothing else; a deployer is refused an
admin's command; the audit log names who did each thing; the last admin stays.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackyard.cli.triggers import remote_url

from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo
from .test_git_push import git

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("people") / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def as_person(yard: RunningPlatform, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**yard.env, "STACKYARD_TOKEN": token}
    return subprocess.run([*STACKYARD, *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_team_with_scoped_tokens(yard: RunningPlatform, tmp_path: Path) -> None:
    added = yard.cli("users", "add", "alice", "--role", "admin")
    alice = added.stdout.strip()
    assert alice.startswith("sy_")
    assert "the only time it is shown" in added.stderr
    logged_in = subprocess.run(
        [*STACKYARD, "login"], input=alice + "\n", env=yard.env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert logged_in.returncode == 0, logged_in.stderr
    stored = Path(yard.env["XDG_CONFIG_HOME"]) / "stackyard" / "credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert "alice (admin)" in yard.cli("whoami").stdout  # the stored token, not the file's
    bob = yard.cli("users", "add", "bob", "--role", "deployer").stdout.strip()
    yard.cli("users", "add", "carol", "--role", "viewer")
    listed = yard.cli("users").stdout
    for line in ("alice", "bob", "carol"):
        assert line in listed

    repo = GitRepo.from_example("static-site", tmp_path / "app")
    yard.cli("stacks", "create", "hello", "--repo", str(repo.path))
    yard.cli("stacks", "create", "other", "--repo", str(repo.path))

    # The old remote URL (the bootstrap admin token) still pushes.
    old = remote_url(yard.api_url, yard.token, "hello")
    assert "pipeline run 1 started" in git(repo.path, "push", old, "main").stderr

    url = yard.cli("remote", "hello").stdout.strip()
    assert alice not in url
    assert yard.token not in url
    repo.write("NOTE", "2")
    repo.commit("2")
    alices = repo.head()
    pushed = git(repo.path, "push", url, "main")
    assert "remote: Stackyard: pipeline run 2 started" in pushed.stderr, pushed.stderr
    runs = as_person(yard, bob, "runs", "hello", "--json")
    assert runs.returncode == 0, runs.stderr
    assert [r["pushed_by"] for r in json.loads(runs.stdout)][:2] == [
        "alice",
        "admin",
    ]

    other = git(repo.path, "push", url.replace("/hello.git", "/other.git"), "main", ok=False)
    assert other.returncode != 0
    assert "this takes push on stack other" in other.stderr
    api = as_person(yard, url.split(":")[2].split("@")[0], "stacks", "list")
    assert api.returncode != 0
    assert "this takes read on the platform" in api.stderr

    refused = as_person(yard, bob, "stacks", "delete", "other", "--yes")
    assert refused.returncode == 1
    assert "forbidden: this takes admin on stack other" in refused.stderr

    protected = yard.cli(
        "protect", "hello", "--stage", "prod", "--approvers", "alice", "--deployers", "alice",
        "--four-eyes",
    )  # fmt: skip
    assert "hello/prod: approvers alice; deployers alice, four eyes" in protected.stdout
    widen = as_person(yard, bob, "protect", "hello", "--stage", "prod", "--approvers", "bob")
    assert widen.returncode == 1
    # Four eyes holds on every way into prod: alice may not approve her run 2 at the gate,
    # nor release its commit to prod herself (even forced past staging).
    deadline = time.monotonic() + 120
    while not any(
        b["commit_sha"] == alices and b["status"] == "SUCCEEDED"
        for b in json.loads(yard.cli("builds", "hello", "--json").stdout)
    ):
        assert time.monotonic() < deadline, "run 2 never built alice's commit"
        time.sleep(0.5)
    own = as_person(
        yard, alice, "release", "hello", "--stage", "prod", "--commit", alices, "--force",
        "--deploy",
    )  # fmt: skip
    assert own.returncode == 1, own.stderr
    assert (
        f"stage prod needs four eyes: alice pushed commit {alices[:12]} (run 2) and may not "
        "also release it to prod"
    ) in own.stderr
    prod = json.loads(yard.cli("releases", "hello", "--stage", "prod", "--json").stdout)
    assert alices not in {r["commit_sha"] for r in prod}

    token_id = url.split("_")[1]
    yard.cli("tokens", "revoke", token_id)
    repo.write("NOTE", "3")
    repo.commit("3")
    revoked = git(repo.path, "push", url, "main", ok=False)
    assert revoked.returncode != 0
    assert "token revoked" in revoked.stderr

    entries = json.loads(yard.cli("audit", "--stack", "hello", "--json", "--limit", "200").stdout)
    seen = {(e["actor"], e["action"], e["result"], e["via"]) for e in entries}
    assert ("alice", "git push", "ok", "git") in seen
    assert ("alice", "record_push", "ok", "git") in seen  # the hook's report, as the pusher
    assert ("alice", "protect", "ok", "cli") in seen
    assert ("bob", "protect", "refused", "cli") in seen
    assert ("", "git push", "refused", "git") in {
        (e["actor"], e["action"], e["result"], e["via"]) for e in entries if e["status"] == 401
    }

    # From a script (no terminal), removing someone takes --yes: nothing is removed without.
    unconfirmed = subprocess.run(
        [*STACKYARD, "users", "remove", "bob"],
        env=yard.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unconfirmed.returncode == 2, unconfirmed.stderr
    assert "confirm with: stackyard users remove bob --yes" in unconfirmed.stderr
    assert "bob" in yard.cli("users", "list").stdout
    yard.cli("users", "remove", "admin", "--yes")
    last = as_person(yard, alice, "users", "remove", "alice", "--yes")
    assert last.returncode == 2
    assert "alice is the last admin" in last.stderr
    # The bootstrap token went with its person: the old remote URL stops working.
    assert "token revoked" in git(repo.path, "push", old, "main", ok=False).stderr
