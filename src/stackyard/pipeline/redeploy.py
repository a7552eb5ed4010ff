"""Make a release, then deploy it: a chosen release, a rollback, or new config for the image.

The API's deploy and rollback and the variable service's "changed, now redeploy" call this.
Each step has one owner: releases make the release and move the stage tag
(pipeline/releases.py), the deploy service records the deployment (deploy/service.py).
"""

from __future__ import annotations

from pydantic import BaseModel

from stackyard.deploy.records import DeploymentView
from stackyard.deploy.service import DeployService
from stackyard.errors import StackyardError
from stackyard.pipeline.releases import ReleaseService


class Redeployment(BaseModel):
    """A stage that got a new release (same image, new config) and its deployment."""

    stage: str
    release: int
    deployment: int


class StageProblem(BaseModel):
    """A stage that could not be redeployed, and why (the change itself is stored)."""

    stage: str
    error: str


class Redeployed(BaseModel):
    """What ``reconfigure`` did, stage by stage."""

    redeployed: list[Redeployment] = []
    not_redeployed: list[StageProblem] = []


class RedeployService:
    def __init__(self, releases: ReleaseService, deploy: DeployService) -> None:
        self._releases = releases
        self._deploy = deploy

    def deploy(
        self, stack: str, stage: str, release: int | None, *, trigger: str
    ) -> DeploymentView:
        """Deploy the stage's latest release, or release ``release`` (its tag follows)."""
        self._deploy.ping(stack, stage, release)  # a clear error now, before the tag moves
        if release is not None:  # the tag moves (and a target's copy) from the stack's registry
            self._deploy.require_image(stack, stage, release, from_home=True)
            self._releases.follow(stack, stage, release)
        return self._deploy.deploy(stack, stage, release, trigger=trigger)

    def rollback(
        self,
        stack: str,
        stage: str,
        to: int | None,
        *,
        trigger: str = "rollback",
        created_by: str = "api",
    ) -> DeploymentView:
        """A new release copying release ``to`` (default: the one before the current),
        image and config, deployed."""
        number = to if to is not None else self._releases.rollback_target(stack, stage)
        self._deploy.ping(stack, stage, number)
        self._deploy.require_image(stack, stage, number, from_home=True)  # before the copy
        copy = self._releases.copy(stack, stage, number, source="rollback", created_by=created_by)
        return self._deploy.deploy(stack, stage, copy.number, trigger=trigger)

    def reconfigure(
        self, stack: str, stage: str | None, *, trigger: str, created_by: str
    ) -> Redeployed:
        """A new release (same digest, fresh config) and its deployment, in ``stage`` (else
        every stage) if it runs a release; a stage that fails is reported, the others go on."""
        outcome = Redeployed()
        for name in self._releases.deployed_stages(stack, stage):
            try:
                release = self._releases.reconfigure(
                    stack, name, created_by=created_by, reason=trigger
                )
                deployment = self._deploy.deploy(stack, name, release.number, trigger=trigger)
            except StackyardError as exc:
                outcome.not_redeployed.append(StageProblem(stage=name, error=exc.message))
                continue
            outcome.redeployed.append(
                Redeployment(stage=name, release=release.number, deployment=deployment.number)
            )
        return outcome
