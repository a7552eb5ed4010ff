"""The variables Stackyard sets in a build or release spec, and those it sets in every task.

``spec_variables`` makes the dictionary a spec run gets (DESIGN.md's list: ``STACK_NAME``,
``IMAGE_URL``, the ``CODEBUILD_*`` set, the TinyStacks aliases, a release's regional
registry, and the registry login).
Builds and releases take it from here. The variable rule (variables.py) refuses these
names for variables a user sets, so a user's value never silently loses to the platform's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from stackyard.images.imagestore import LOCAL_TARGET, ImageStore, TargetPlace

# Set in builds and releases, so a spec can push to the platform's registry.
REGISTRY_LOGIN = frozenset({"DOCKER_CONFIG", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"})
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


@dataclass(frozen=True)
class StageRegistry:
    """Where a stage's image goes: its target's registry (TinyStacks' regional ECR) and
    region."""

    endpoint: str  # host:port
    image_url: str  # the stack's repository there
    region: str  # "" when the target names none


def stage_registry(images: ImageStore, stack: str, target: TargetPlace) -> StageRegistry:
    """The registry and region of a stage's ``target``: the one place a release looks them
    up. The built-in ``local`` target has no region, and its registry is the stack's own;
    another target's is the registry its engine pulls from (ImageStore.pulled_from)."""
    image_url, login = images.pulled_from(stack, target)
    return StageRegistry(login.registry, image_url, region=target.region)


def spec_login(images: ImageStore, stack: str, *, in_container: bool, scratch: Path) -> SpecLogin:
    """The login of ``stack``'s registry (the platform's, or its outside one). In a build
    container, a stand-in password: the build's Docker API adds the stack's login to its
    pushes and answers ``docker login`` itself, and the registry's own password never
    enters the container. On the host, the registry's login, with a ``DOCKER_CONFIG``
    made (logged in) under ``scratch``."""
    login = images.login(stack)
    if in_container:
        return SpecLogin(login.username, f"stand-in-{secrets.token_urlsafe(18)}")
    config = images.docker_config(scratch / "docker", stack)
    return SpecLogin(login.username, login.password, str(config))


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
        regional = stage_registry(images, run.stack, run.target)
        values["STAGE_NAME"] = run.stage
        values["PREVIOUS_STAGE_NAME"] = run.previous_stage or "latest"
        values["STAGE_REGION"] = regional.region
        values["REGIONAL_ECR_ENDPOINT"] = regional.endpoint
        values["REGIONAL_ECR_IMAGE_URL"] = regional.image_url
        values["SERVICE_NAME"] = SERVICE_PLACEHOLDER
    return values
