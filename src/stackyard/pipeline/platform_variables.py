"""The variables Stackyard sets in a build or release spec, and those it sets in every task.

``spec_variables`` makes the dictionary a spec run gets (DESIGN.md's list: ``STACK_NAME``,
``IMAGE_URL``, the ``CODEBUILD_*`` set, the TinyStacks aliases, a release's regional
registry, and the registry login).
Builds and releases take it from here. The variable rule (variables.py) refuses these
names for variables a user sets, so a user's value never silently loses to the platform's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stackyard.images.dockerproxy.rules import StageRepository
from stackyard.images.imagestore import LOCAL_TARGET, ImageStore, TargetPlace
from stackyard.registry_login import RegistryLogin

# Set in builds and releases, so a spec can push to the platform's registry.
# A release whose stage's target registry is not the stack's own: that registry's password
# (a stand-in in a build container), which `aws ecr get-login-password --region
# $STAGE_REGION` prints. Masked like REGISTRY_PASSWORD.
STAGE_REGISTRY_PASSWORD = "REGIONAL_REGISTRY_PASSWORD"  # noqa: S105 (a variable's name)
REGISTRY_LOGIN = frozenset(
    {"DOCKER_CONFIG", "REGISTRY_USERNAME", "REGISTRY_PASSWORD", STAGE_REGISTRY_PASSWORD}
)
# TinyStacks' post_build deploys to ECS or Lambda unless SERVICE_NAME is this; Stackyard
# deploys the stage itself, so a release.yml takes the "Service is not ready yet" path.
SERVICE_PLACEHOLDER = "placeholder"
# Set in every task: name -> what it holds.
TASK = {
    "PORT": "the port each task must listen on",
    "HOST": "the address each task must listen on",
}


LOCAL = TargetPlace(LOCAL_TARGET)


@dataclass(frozen=True)
class SpecRun:
    """What one build or release spec run is for."""

    stack: str
    commit_sha: str
    run_id: str  # CODEBUILD_BUILD_ID: "<stack>:<build number>" or "<stack>:<stage>"
    build_number: int | None = None  # builds only
    stage: str | None = None  # releases only
    previous_stage: str | None = None  # releases only: what the stage promotes from
    target: TargetPlace = LOCAL  # releases only: the stage's target


@dataclass(frozen=True)
class SpecLogin:
    """The registry login a spec run sees as REGISTRY_USERNAME, REGISTRY_PASSWORD and
    DOCKER_CONFIG (None: not set)."""

    username: str
    password: str
    docker_config: str | None = None
    stage_password: str | None = None  # the stage target registry's, when it has its own


@dataclass(frozen=True)
class StageRegistry:
    """Where a stage's image goes: its target's registry (TinyStacks' regional ECR) and
    region."""

    endpoint: str  # host:port
    image_url: str  # the stack's repository there
    region: str  # "" when the target names none
    login: RegistryLogin = field(repr=False)
    own: bool = True  # the stack's own repository: nothing to push there on top

    def repository(self) -> StageRepository | None:
        """What a release may push to besides the stack's own repository."""
        if self.own:
            return None
        return StageRepository(self.endpoint, self.image_url.split("/", 1)[1], self.login)


def stage_registry(images: ImageStore, stack: str, target: TargetPlace) -> StageRegistry:
    """The registry and region of a stage's ``target``: the one place a release looks them
    up. The built-in ``local`` target has no region, and its registry is the stack's own;
    another target's is the registry its engine pulls from (ImageStore.pulled_from)."""
    image_url, login = images.pulled_from(stack, target)
    own = image_url == images.image_url(stack)
    return StageRegistry(login.registry, image_url, target.region, login, own=own)


def spec_login(
    images: ImageStore,
    stack: str,
    *,
    in_container: bool,
    scratch: Path,
    stage: StageRegistry | None = None,
) -> SpecLogin:
    """The login of ``stack``'s registry (the platform's, or its outside one), and of a
    release's ``stage`` target registry when that is not the stack's own. In a build
    container, stand-in passwords: the build's Docker API adds the logins to pushes and
    answers ``docker login`` itself, and the registries' own passwords never enter the
    container. On the host, the registries' logins, with a ``DOCKER_CONFIG`` made (logged
    in to both) under ``scratch``."""
    login = images.login(stack)
    elsewhere = stage.login if stage is not None and not stage.own else None
    if in_container:
        stage_password = f"stand-in-{secrets.token_urlsafe(18)}" if elsewhere else None
        return SpecLogin(
            login.username, f"stand-in-{secrets.token_urlsafe(18)}", stage_password=stage_password
        )
    also = [elsewhere] if elsewhere is not None else []
    config = images.docker_config(scratch / "docker", stack, also=also)
    return SpecLogin(
        login.username,
        login.password,
        str(config),
        stage_password=elsewhere.password if elsewhere is not None else None,
    )


def spec_variables(
    run: SpecRun, images: ImageStore, *, artifacts: str, login: SpecLogin
) -> dict[str, str]:
    """The platform variables of a spec run; ``artifacts`` as its commands see it."""
    image_url = images.image_url(run.stack)
    endpoint = images.endpoint_of(run.stack)  # an outside registry, when the stack has one
    values = {
        "STACK_NAME": run.stack,
        "COMMIT_SHA": run.commit_sha,
        "REGISTRY_ENDPOINT": endpoint,
        "IMAGE_URL": image_url,
        "ECR_ENDPOINT": endpoint,
        "ECR_IMAGE_URL": image_url,
        "S3_BUCKET": artifacts,
        "CODEBUILD_BUILD_ID": run.run_id,
        "CODEBUILD_RESOLVED_SOURCE_VERSION": run.commit_sha,
        "REGISTRY_USERNAME": login.username,
        "REGISTRY_PASSWORD": login.password,
    }
    if login.docker_config is not None:
        values["DOCKER_CONFIG"] = login.docker_config
    if run.build_number is not None:
        values["CODEBUILD_BUILD_NUMBER"] = str(run.build_number)
    if run.stage is not None:
        # TinyStacks left the regional pair empty for a stage in the stack's own region, so
        # a release.yml's regional block is skipped; so does Stackyard for a stage whose
        # target pulls from the stack's own repository (every stage on ``local``).
        regional = stage_registry(images, run.stack, run.target)
        values["STAGE_NAME"] = run.stage
        values["PREVIOUS_STAGE_NAME"] = run.previous_stage or "latest"
        values["STAGE_REGION"] = regional.region
        values["REGIONAL_ECR_ENDPOINT"] = "" if regional.own else regional.endpoint
        values["REGIONAL_ECR_IMAGE_URL"] = "" if regional.own else regional.image_url
        values["SERVICE_NAME"] = SERVICE_PLACEHOLDER
        if login.stage_password is not None:
            values[STAGE_REGISTRY_PASSWORD] = login.stage_password
    return values
