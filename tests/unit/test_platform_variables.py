"""What a build or release spec gets from the platform: DESIGN.md's list, made in one place."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from stackyard.images.dockerproxy.rules import StageRepository
from stackyard.images.imagestore import ImageStore, Placement, TargetPlace
from stackyard.images.registry_fake import FakeRegistry
from stackyard.pipeline.platform_variables import (
    SpecLogin,
    SpecRun,
    spec_login,
    spec_variables,
    stage_registry,
)
from stackyard.registry_login import RegistryLogin

REGISTRY = "127.0.0.1:5999"
SHA = "c0ffee" * 6 + "abcd"


def images() -> ImageStore:
    return ImageStore(FakeRegistry(REGISTRY), RegistryLogin(REGISTRY, "stackyard", "pw-123"))


def test_a_release_gets_its_stage_and_the_one_it_promotes_from(tmp_path: Path) -> None:
    run = SpecRun("shop", SHA, "shop:prod", stage="prod", previous_stage="staging")
    login = spec_login(images(), "shop", in_container=False, scratch=tmp_path)
    values = spec_variables(run, images(), artifacts=str(tmp_path / "a"), login=login)
    assert values == {
        "STACK_NAME": "shop",
        "STAGE_NAME": "prod",
        "PREVIOUS_STAGE_NAME": "staging",
        "COMMIT_SHA": SHA,
        "REGISTRY_ENDPOINT": REGISTRY,
        "IMAGE_URL": f"{REGISTRY}/shop",
        "ECR_ENDPOINT": REGISTRY,
        "ECR_IMAGE_URL": f"{REGISTRY}/shop",
        "S3_BUCKET": str(tmp_path / "a"),
        "CODEBUILD_BUILD_ID": "shop:prod",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": SHA,
        "DOCKER_CONFIG": str(tmp_path / "docker"),
        "REGISTRY_USERNAME": "stackyard",
        "REGISTRY_PASSWORD": "pw-123",
        "STAGE_REGION": "",
        # TinyStacks' regional pair is empty for a stage in the stack's own registry
        "REGIONAL_ECR_ENDPOINT": "",
        "REGIONAL_ECR_IMAGE_URL": "",
        "SERVICE_NAME": "placeholder",
    }


def test_in_a_build_container_the_registry_password_is_a_stand_in(tmp_path: Path) -> None:
    run = SpecRun("shop", SHA, "shop:7", build_number=7)
    login = spec_login(images(), "shop", in_container=True, scratch=tmp_path)
    values = spec_variables(run, images(), artifacts="/codebuild/output/artifacts", login=login)
    assert values["REGISTRY_USERNAME"] == "stackyard"
    assert values["REGISTRY_PASSWORD"].startswith("stand-in-")
    assert "pw-123" not in json.dumps(values)
    assert "DOCKER_CONFIG" not in values
    assert values["S3_BUCKET"] == "/codebuild/output/artifacts"
    assert list(tmp_path.iterdir()) == []  # no docker config with the password was written


def test_a_build_gets_its_number_and_no_stage(tmp_path: Path) -> None:
    run = SpecRun("shop", SHA, "shop:7", build_number=7)
    login = SpecLogin("stackyard", "pw-123")
    values = spec_variables(run, images(), artifacts=str(tmp_path / "a"), login=login)
    assert values["CODEBUILD_BUILD_NUMBER"] == "7"
    for stage_only in ("STAGE_NAME", "PREVIOUS_STAGE_NAME", "STAGE_REGION", "SERVICE_NAME"):
        assert stage_only not in values
    assert "REGIONAL_ECR_IMAGE_URL" not in values


def test_the_first_stage_promotes_from_latest(tmp_path: Path) -> None:
    run = SpecRun("shop", SHA, "shop:dev", stage="dev")
    login = SpecLogin("stackyard", "pw-123")
    values = spec_variables(run, images(), artifacts=str(tmp_path / "a"), login=login)
    assert values["PREVIOUS_STAGE_NAME"] == "latest"


def test_docker_config_logs_a_docker_client_in_to_the_registry(tmp_path: Path) -> None:
    run = SpecRun("shop", SHA, "shop:7", build_number=7)
    login = spec_login(images(), "shop", in_container=False, scratch=tmp_path)
    spec_variables(run, images(), artifacts=str(tmp_path / "a"), login=login)
    config = tmp_path / "docker" / "config.json"
    assert config.stat().st_mode & 0o777 == 0o600
    auth = json.loads(config.read_text())["auths"][REGISTRY]["auth"]
    assert base64.b64decode(auth).decode() == "stackyard:pw-123"


def test_a_release_to_a_stage_on_a_target_gets_that_targets_region_and_registry(
    tmp_path: Path,
) -> None:
    eu_login = RegistryLogin("127.0.0.1:5998", "bot", "eu-pw")
    eu = TargetPlace("eu", "eu-west", Placement("eu", None, "acme", eu_login), builtin=False)
    run = SpecRun("shop", SHA, "shop:prod", stage="prod", previous_stage="dev", target=eu)
    regional = stage_registry(images(), "shop", eu)
    login = spec_login(images(), "shop", in_container=False, scratch=tmp_path, stage=regional)
    values = spec_variables(run, images(), artifacts=str(tmp_path / "a"), login=login)
    assert (
        values["STAGE_REGION"],
        values["REGIONAL_ECR_ENDPOINT"],
        values["REGIONAL_ECR_IMAGE_URL"],
    ) == ("eu-west", "127.0.0.1:5998", "127.0.0.1:5998/acme/shop")
    assert values["IMAGE_URL"] == f"{REGISTRY}/shop"  # where the stack's images are
    # On the host: the target registry's password, and a docker config logged in there too.
    assert values["REGIONAL_REGISTRY_PASSWORD"] == "eu-pw"
    assert values["REGISTRY_PASSWORD"] == "pw-123"
    auths = json.loads((tmp_path / "docker" / "config.json").read_text())["auths"]
    assert base64.b64decode(auths["127.0.0.1:5998"]["auth"]).decode() == "bot:eu-pw"
    assert regional.repository() == StageRepository("127.0.0.1:5998", "acme/shop", eu_login)

    # In a build container: a stand-in, never the registry's own password.
    inside = spec_login(images(), "shop", in_container=True, scratch=tmp_path, stage=regional)
    assert inside.stage_password is not None
    assert inside.stage_password.startswith("stand-in-")
    assert inside.stage_password != inside.password


def test_a_stage_on_local_has_no_second_registry(tmp_path: Path) -> None:
    regional = stage_registry(images(), "shop", TargetPlace("local"))
    assert regional.own
    assert regional.repository() is None
    login = spec_login(images(), "shop", in_container=False, scratch=tmp_path, stage=regional)
    assert login.stage_password is None
    run = SpecRun("shop", SHA, "shop:prod", stage="prod", previous_stage="dev")
    values = spec_variables(run, images(), artifacts=str(tmp_path / "a"), login=login)
    assert "REGIONAL_REGISTRY_PASSWORD" not in values
