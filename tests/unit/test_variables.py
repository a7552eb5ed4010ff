"""Variables and secrets through the wired services, with FakeEngine and FakeRouter.

The stage loops run on their threads against the fakes, so a change really ends in tasks
started with the new environment. Releases and builds are rows made by hand.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from stackyard.api.app import ApiContext, create_app
from stackyard.deploy import records
from stackyard.engines.base import TaskSpec
from stackyard.engines.fake import FakeEngine
from stackyard.errors import NotFoundError, UsageError
from stackyard.pipeline.releases import config_snapshot
from stackyard.pipeline.services import Services, build_services
from stackyard.pipeline.variables import VariableService
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.source.git import GitSource
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Release, Stack

STACK = "shop"
V1 = "sha256:" + "1" * 64
TOKEN = "t0ken"
SECRET = "pa55-w0rd-that-must-not-leak"


def stage(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": 1,
        "health": {"type": "docker"},
        "deploy": {"drain_seconds": 0, "stop_timeout": 1},
        "variables": {"GREETING": "from-yml", "LEVEL": "info"},
        **fields,
    }


CONFIG = {"stages": [stage("dev"), stage("prod")]}


class Platform:
    def __init__(self, tmp: Path, config: dict[str, Any], commit: str) -> None:
        self.settings = Settings(data_dir=tmp / "data")
        self.settings.data_dir.mkdir()
        self.database = open_database(self.settings.database_url)
        migrate(self.database)
        self.sessions = session_factory(self.database)
        self.engine = FakeEngine()
        self.services: Services = build_services(
            self.settings,
            self.sessions,
            RegistryLogin(self.settings.registry_endpoint, "stackyard", "registry-password"),
            engine=self.engine,
            router=FakeRouter(),
        )
        self.commit = commit
        with self.sessions.begin() as session:
            stack = Stack(name=STACK, repo=str(tmp / "repo"))
            session.add(stack)
            session.flush()
            self.stack_id = stack.id
            session.add(
                Build(
                    stack_id=stack.id,
                    number=1,
                    commit_sha=commit,
                    status="SUCCEEDED",
                    digest=V1,
                    config=config,
                )
            )
        self.config = config

    @property
    def variables(self) -> VariableService:
        return self.services.variables

    def ship(self, stage_name: str) -> int:
        """Release 1 of the stage (as a promotion records it) and deploy it to COMPLETED."""
        with self.sessions.begin() as session:
            session.add(
                Release(
                    stack_id=self.stack_id,
                    stage=stage_name,
                    number=1,
                    digest=V1,
                    commit_sha=self.commit,
                    build_number=1,
                    config=config_snapshot(self.config, stage_name),
                )
            )
        deployment = self.services.deploy.deploy(STACK, stage_name, 1, trigger="test")
        self.wait(stage_name, deployment.number)
        return 1

    def wait(self, stage_name: str, number: int, status: str = "COMPLETED") -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = self.services.deploy.get(STACK, stage_name, number)
            if found.status in ("COMPLETED", "FAILED"):
                assert found.status == status, found
                return
            time.sleep(0.05)
        raise AssertionError(f"deployment {number} of {stage_name} did not end")

    def release(self, stage_name: str, number: int) -> Release:
        with self.sessions() as session:
            return records.find_release(session, self.stack_id, stage_name, number)

    def last_env(self, stage_name: str) -> dict[str, str]:
        specs = [s for (s,) in self.engine.calls_to("start") if isinstance(s, TaskSpec)]
        return dict(
            next(s for s in reversed(specs) if s.name.startswith(f"sy-{STACK}-{stage_name}-")).env
        )

    def last_files(self) -> dict[str, str]:
        specs = [s for (s,) in self.engine.calls_to("start") if isinstance(s, TaskSpec)]
        return dict(specs[-1].files)

    def close(self) -> None:
        self.services.close()
        self.database.dispose()


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path, CONFIG, "a" * 40)
    try:
        yield platform
    finally:
        platform.close()


# -- runtime variables


def test_a_runtime_variable_makes_a_release_with_the_same_digest_and_deploys_it(
    yard: Platform,
) -> None:
    yard.ship("dev")
    change = yard.variables.change_variables(STACK, values={"GREETING": "hello"})
    assert change.changed == ["GREETING"]
    assert [(r.stage, r.release, r.deployment) for r in change.redeployed] == [("dev", 2, 2)]
    release = yard.release("dev", 2)
    assert release.digest == V1
    assert release.source == "variables changed (image of release 1)"
    assert release.config["variables"] == {"GREETING": "hello", "LEVEL": "info"}
    yard.wait("dev", 2)
    assert yard.last_env("dev")["GREETING"] == "hello"


def test_precedence_yml_then_stack_wide_then_stage(yard: Platform) -> None:
    yard.ship("dev")
    yard.ship("prod")
    yard.variables.change_variables(STACK, values={"GREETING": "stack", "EXTRA": "x"})
    change = yard.variables.change_variables(STACK, values={"GREETING": "dev-only"}, stage="dev")
    assert [r.stage for r in change.redeployed] == ["dev"]  # prod is not touched
    dev = yard.release("dev", 3).config["variables"]
    prod = yard.release("prod", 2).config["variables"]
    assert dev == {"GREETING": "dev-only", "LEVEL": "info", "EXTRA": "x"}
    assert prod == {"GREETING": "stack", "LEVEL": "info", "EXTRA": "x"}


def test_setting_the_same_value_again_changes_nothing(yard: Platform) -> None:
    yard.ship("dev")
    yard.variables.change_variables(STACK, values={"A": "1"})
    again = yard.variables.change_variables(STACK, values={"A": "1"})
    assert again.changed == []
    assert again.redeployed == []


def test_a_stage_never_deployed_is_not_released(yard: Platform) -> None:
    change = yard.variables.change_variables(STACK, values={"A": "1"}, stage="prod")
    assert change.changed == ["A"]
    assert change.redeployed == []


def test_unset_a_variable_that_is_not_set_is_an_error(yard: Platform) -> None:
    with pytest.raises(NotFoundError, match="no runtime variable NOPE for stage dev"):
        yard.variables.change_variables(STACK, unset=["NOPE"], stage="dev")


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("STACK_NAME", "runtime", "runtime variable 'STACK_NAME' is set by Stackyard"),
        ("CODEBUILD_BUILD_ID", "build", "variable 'CODEBUILD_BUILD_ID' is set by Stackyard"),
        ("PORT", "runtime", "the port each task must listen on"),
        ("HOST", "runtime", "the address each task must listen on"),
        ("REGISTRY_PASSWORD", "build", "to reach its registry"),
        ("1ABC", "runtime", "runtime variable '1ABC' is not a valid variable name"),
        ("A-B", "build", "build variable 'A-B' is not a valid variable name"),
    ],
)
def test_reserved_and_invalid_names_are_refused_with_the_reason(
    yard: Platform, name: str, kind: str, reason: str
) -> None:
    with pytest.raises(UsageError, match=reason):
        yard.variables.change_variables(STACK, values={name: "x"}, build=kind == "build")


def test_port_is_fine_as_a_build_variable_but_not_as_a_secret(yard: Platform) -> None:
    yard.variables.change_variables(STACK, values={"PORT": "1"}, build=True)
    with pytest.raises(UsageError, match="the port each task must listen on"):
        yard.variables.set_secret(STACK, "PORT", "1")


def test_an_unknown_stage_names_the_valid_ones(yard: Platform) -> None:
    with pytest.raises(NotFoundError, match=r"no stage 'qa' \(stages: dev, prod\)"):
        yard.variables.change_variables(STACK, values={"A": "1"}, stage="qa")
    with pytest.raises(UsageError, match="not to a stage"):
        yard.variables.change_variables(STACK, values={"A": "1"}, stage="dev", build=True)


# -- build variables


def test_a_build_variable_change_starts_a_rebuild(yard: Platform) -> None:
    calls: list[tuple[str, str]] = []

    def rebuild(stack: str, by: str) -> str:
        calls.append((stack, by))
        return "pipeline run 7"

    service = VariableService(
        yard.sessions,
        yard.variables.store,
        yard.services.secrets,
        yard.services.redeploy,
        on_build_variables_changed=rebuild,
    )
    change = service.change_variables(
        STACK, values={"NODE_ENV": "production"}, build=True, created_by="alice"
    )
    assert calls == [(STACK, "alice")]  # the run records who changed the variables
    assert change.rebuild == "pipeline run 7"
    assert change.redeployed == []
    inputs = yard.variables.store.build_inputs(STACK)
    assert inputs.variables == {"NODE_ENV": "production"}
    service.change_variables(STACK, values={"NODE_ENV": "production"}, build=True)
    assert calls == [(STACK, "alice")]  # unchanged: no rebuild


# -- secrets


def test_secrets_are_encrypted_at_rest_and_the_key_is_private(yard: Platform) -> None:
    yard.variables.set_secret(STACK, "DB_PASSWORD", SECRET)
    yard.variables.set_secret(STACK, "DB_PASSWORD", SECRET + "-2", stage="dev")
    key = yard.settings.data_dir / "secrets.key"
    assert key.stat().st_mode & 0o777 == 0o600
    for path in yard.settings.data_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert yard.services.secrets.mask_values(STACK) == ["registry-password", SECRET, SECRET + "-2"]


def test_a_secret_reaches_the_task_and_is_masked_in_the_deployment_log(yard: Platform) -> None:
    yard.ship("dev")
    # The new tasks print the secret and crash: their last lines reach the deployment log.
    yard.engine.behave(V1, output=["connecting with {DB_PASSWORD}"], crash_after=0.0)
    change = yard.variables.set_secret(STACK, "DB_PASSWORD", SECRET)
    assert change.secrets[0].version == 1
    assert "value" not in change.model_dump()["secrets"][0]
    [redeploy] = change.redeployed
    assert yard.release("dev", redeploy.release).config["secrets"] == {"DB_PASSWORD": 1}
    yard.wait("dev", redeploy.deployment, "FAILED")
    started = [s for (s,) in yard.engine.calls_to("start") if isinstance(s, TaskSpec)]
    assert any(s.env.get("DB_PASSWORD") == SECRET for s in started)
    deployment = yard.services.deploy.get(STACK, "dev", redeploy.deployment)
    log = Path(deployment.log_path).read_text()
    assert "connecting with ***" in log
    assert SECRET not in log
    assert SECRET not in deployment.reason


def test_a_rollback_restores_the_older_secret_version(
    yard: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rollback moves the registry tag back; this test has no registry.
    monkeypatch.setattr(yard.services.images, "retag", lambda _stack, digest, _tag: digest)
    yard.ship("dev")
    first = yard.variables.set_secret(STACK, "TOKEN", "one").redeployed[0]
    yard.wait("dev", first.deployment)
    second = yard.variables.set_secret(STACK, "TOKEN", "two").redeployed[0]
    yard.wait("dev", second.deployment)
    assert yard.last_env("dev")["TOKEN"] == "two"
    rollback = yard.services.redeploy.rollback(STACK, "dev", first.release)
    yard.wait("dev", rollback.number)
    restored = yard.release("dev", rollback.release_number)
    assert restored.config["secrets"] == {"TOKEN": 1}
    assert restored.digest == V1
    assert yard.last_env("dev")["TOKEN"] == "one"
    # Stage secrets win over stack-wide ones, and versions count per name.
    third = yard.variables.set_secret(STACK, "TOKEN", "dev-token", stage="dev")
    assert third.secrets[0].version == 3
    assert yard.release("dev", third.redeployed[0].release).config["secrets"] == {"TOKEN": 3}


def test_an_unset_secret_keeps_its_versions_for_rollbacks(yard: Platform) -> None:
    yard.variables.set_secret(STACK, "TOKEN", "one")
    yard.variables.unset_secret(STACK, "TOKEN")
    assert yard.variables.list_secrets(STACK).secrets == []
    assert yard.services.secrets.resolve(STACK, {"TOKEN": 1}) == {"TOKEN": "one"}
    with pytest.raises(NotFoundError, match="no secret TOKEN for every stage"):
        yard.variables.unset_secret(STACK, "TOKEN")


def test_the_api_never_returns_a_secret_value(yard: Platform) -> None:
    app = create_app(ApiContext(yard.settings, TOKEN, {}, yard.services))
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    base = f"/api/v1/stacks/{STACK}"
    responses = [
        client.put(f"{base}/secrets/DB_PASSWORD", json={"value": SECRET}),
        client.put(f"{base}/secrets/DB_PASSWORD?stage=dev", json={"value": SECRET + "x"}),
        client.get(f"{base}/secrets"),
        client.get(f"{base}/secrets?stage=dev"),
        client.get(f"{base}/variables"),
        client.put(f"{base}/variables/GREETING?stage=dev", json={"value": "hi"}),
        client.patch(f"{base}/variables?build=true", json={"set": {"B": "1"}}),
        client.delete(f"{base}/secrets/DB_PASSWORD?stage=dev"),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        assert SECRET not in response.text
    listing = client.get(f"{base}/secrets").json()["secrets"]
    assert listing == [
        {
            "name": "DB_PASSWORD",
            "stage": None,
            "version": 1,
            "updated_at": listing[0]["updated_at"],
        }
    ]
    variables = client.get(f"{base}/variables?stage=dev").json()["variables"]
    assert [(v["name"], v["value"], v["stage"]) for v in variables] == [("GREETING", "hi", "dev")]
    bad = client.put(f"{base}/variables/PORT", json={"value": "1"})
    assert bad.status_code == 400
    assert "reserved for tasks" in bad.json()["error"]


# -- env files


def _repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", *argv], cwd=path, env=env, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def env_yard(tmp_path: Path) -> Iterator[Platform]:
    template = "GREETING={{ GREETING }}\nDB_PASSWORD={{ DB_PASSWORD }}\n"
    sha = _repo(tmp_path / "repo", {"backend.env.j2": template, "bad.env.j2": "X={{ NOPE }}"})
    env_file = {"template": "backend.env.j2", "path": "/run/stackyard/env"}
    config = {"stages": [stage("dev", env_file=env_file)]}
    platform = Platform(tmp_path, config, sha)
    GitSource(platform.settings.data_dir / "git").resolve(
        STACK, str(tmp_path / "repo"), None, "main"
    )
    try:
        yield platform
    finally:
        platform.close()


def test_the_env_file_template_is_snapshotted_and_rendered_at_task_start(
    env_yard: Platform,
) -> None:
    env_yard.ship("dev")
    change = env_yard.variables.set_secret(STACK, "DB_PASSWORD", SECRET)
    [redeploy] = change.redeployed
    snapshot = env_yard.release("dev", redeploy.release).config
    assert snapshot["env_file"]["template"].startswith("GREETING={{ GREETING }}")
    assert SECRET not in str(snapshot)  # the template, never the rendered text
    env_yard.wait("dev", redeploy.deployment)
    rendered = f"GREETING=from-yml\nDB_PASSWORD={SECRET}\n"
    assert env_yard.last_files() == {"/run/stackyard/env": rendered}


def test_an_env_file_missing_a_variable_is_refused_at_release(env_yard: Platform) -> None:
    env_yard.ship("dev")
    change = env_yard.variables.change_variables(STACK, values={"A": "1"})
    [problem] = change.not_redeployed
    assert problem.stage == "dev"
    assert "backend.env.j2: 'DB_PASSWORD' is undefined" in problem.error
    with env_yard.sessions() as session:
        numbers = session.scalars(select(Release.number).where(Release.stage == "dev")).all()
    assert list(numbers) == [1]
