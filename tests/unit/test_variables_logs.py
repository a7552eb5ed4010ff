"""Secrets are masked in build and release logs, and reach build.yml and release.yml.

The build and release services run the specs for real (sh) from a local git repo; the
registry is an httpx MockTransport in which only ``latest`` exists, so both end FAILED at
the registry step, after their spec ran and logged.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.images.imagestore import ImageStore
from stackyard.images.registry import RegistryClient
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.releases import ReleaseFailure, ReleaseService
from stackyard.pipeline.variable_store import VariableStore
from stackyard.registry_login import RegistryLogin
from stackyard.secrets.sql import SqlSecretStore
from stackyard.secrets.vault import Vault, new_key
from stackyard.source.git import GitSource
from stackyard.stacks.service import StackChanges, StackService
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build

STACK = "shop"
SECRET = "s3cr3t-value-for-logs"
V1 = "sha256:" + "1" * 64

BUILD_YML = """\
version: 0.2
env:
  secrets-manager:
    DB: DB_PASSWORD
phases:
  build:
    commands:
      - echo "db=$DB mode=$MODE"
"""
RELEASE_YML = """\
version: 0.2
env:
  parameter-store:
    DB_PASSWORD: DB_PASSWORD
phases:
  build:
    commands:
      - echo "releasing with $DB_PASSWORD and $GREETING"
"""


def _registry(request: httpx.Request) -> httpx.Response:
    if request.method == "HEAD" and request.url.path == f"/v2/{STACK}/manifests/latest":
        return httpx.Response(200, headers={"Docker-Content-Digest": V1})
    return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})


def _repo(path: Path) -> str:
    path.mkdir()
    (path / "build.yml").write_text(BUILD_YML, encoding="utf-8")
    (path / "release.yml").write_text(RELEASE_YML, encoding="utf-8")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", *argv], cwd=path, env=env, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def parts(tmp_path: Path) -> tuple[BuildService, ReleaseService, VariableStore, str]:
    sha = _repo(tmp_path / "repo")
    database = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(database)
    sessions = session_factory(database)
    stacks = StackService(sessions)
    stacks.create(STACK, StackChanges(repo=str(tmp_path / "repo")))
    secrets = SqlSecretStore(sessions, Vault(new_key), platform_secrets=["registry-password"])
    store = VariableStore(sessions, secrets)
    client = RegistryClient(
        "127.0.0.1:5999",
        username="stackyard",
        password="registry-password",
        transport=httpx.MockTransport(_registry),
        retries=1,
    )
    images = ImageStore(client, RegistryLogin("127.0.0.1:5999", "stackyard", "registry-password"))
    source = GitSource(tmp_path / "git")
    builds = BuildService(
        sessions,
        stacks,
        source,
        images,
        logs_dir=tmp_path / "logs",
        work_dir=tmp_path / "work",
        network_mode="host",
        isolation=BuildIsolation(None),
        secret_values=secrets.mask_values,
        build_inputs=store.build_inputs,
    )
    releases = ReleaseService(
        sessions,
        source,
        images,
        secrets,
        logs_dir=tmp_path / "logs",
        work_dir=tmp_path / "work",
        isolation=BuildIsolation(None),
    )
    secrets.set(STACK, "DB_PASSWORD", SECRET)
    with sessions.begin() as session:
        stack = StackService.row(session, STACK)
        store.change_variables(session, stack.id, "build", "", {"MODE": "fast"}, [])
        store.change_variables(session, stack.id, "runtime", "dev", {"GREETING": "hi"}, [])
    return builds, releases, store, sha


def test_a_build_gets_build_variables_and_secrets_and_masks_them(
    parts: tuple[BuildService, ReleaseService, VariableStore, str],
) -> None:
    builds, _, _, _ = parts
    build = builds.start(STACK)
    builds.wait(STACK)
    log = Path(build.log_path).read_text(encoding="utf-8")
    assert "db=*** mode=fast" in log
    assert SECRET not in log
    assert builds.get(STACK, build.number).status == "FAILED"  # nothing pushed: no registry


def test_release_yml_gets_stage_secrets_and_variables_and_masks_them(
    parts: tuple[BuildService, ReleaseService, VariableStore, str], tmp_path: Path
) -> None:
    builds, releases, _, sha = parts
    builds.start(STACK)  # fetches the repo into the source cache
    builds.wait(STACK)
    with releases._sessions.begin() as session:
        stack = StackService.row(session, STACK)
        session.add(
            Build(stack_id=stack.id, number=9, commit_sha=sha, status="SUCCEEDED", digest=V1)
        )
    with pytest.raises(ReleaseFailure):  # release.yml ran, then `dev` is not in the registry
        releases.release(STACK, "dev")
    [log_path] = (tmp_path / "logs" / "releases" / STACK / "dev").glob("attempt-*.log")
    log = log_path.read_text(encoding="utf-8")
    assert "releasing with *** and hi" in log
    assert SECRET not in log
