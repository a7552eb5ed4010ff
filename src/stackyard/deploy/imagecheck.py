"""Whether a release's image is still in the registry an engine pulls it from: one HEAD.

The deploy service asks before it records a deployment (deploy, rollback, redeploy); the
controller asks again before a deployment's tasks start, before its automatic rollback
copies an older release, and before a heal starts a task (deploy/execute.py), since an
engine (Docker 20.10) starts a digest it pulled once even after the registry deleted it.
The registry decides what is deployable; one that cannot tell is not a "no", and is asked
once (``Registry.has_manifest``: no retries), so a registry that is down holds up no step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy import records
from stackyard.errors import NotFoundError, StackyardError
from stackyard.images.imagestore import ImageStore, TargetPlace
from stackyard.store.models import Stack


@dataclass(frozen=True)
class ImageAnswer:
    """What the registry said of one release's image."""

    stack: str
    stage: str
    release: int
    digest: str
    registry: str  # its endpoint
    repository: str
    commit: str = ""
    keep_releases: int = 10
    present: bool | None = True  # None: the registry could not tell
    doubt: str = ""  # why it could not

    @property
    def gone(self) -> bool:
        return self.present is False

    @property
    def missing(self) -> str:
        """Where the image is no longer, and why that happens."""
        return (
            f"its image {self.digest} is no longer in registry {self.registry} "
            f"({self.repository}): retention keeps only the images of the last "
            f"{self.keep_releases} release(s) per stage (stackyard up --keep-releases)"
        )

    @property
    def hint(self) -> str:
        """What to do: a newer release, or the same commit built again."""
        stack, stage, commit = self.stack, self.stage, self.commit[:12]
        rebuild = (
            f"or rebuild commit {commit} (stackyard build {stack} --commit {commit}) and "
            f"release it (stackyard release {stack} --stage {stage} --commit {commit})"
            if commit
            else "or build and release its commit again"
        )
        return f"release a newer one, {rebuild}"

    def refusal(self) -> NotFoundError:
        """The error a deployment of this release fails with."""
        return NotFoundError(
            f"release {self.release} of {self.stack}/{self.stage} cannot be deployed: "
            f"{self.missing}",
            hint=self.hint,
        )

    def unsure(self) -> str:
        """The registry could not tell: what it said."""
        return (
            f"registry {self.registry} could not tell whether it still has "
            f"{self.repository}@{self.digest} ({self.doubt})"
        )


class ImageCheck:
    """Asks the registry a release's target pulls from (or the stack's own) for its image."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        images: ImageStore,
        targets: Callable[[str], TargetPlace],
        keep_releases: int,
    ) -> None:
        self._sessions = sessions
        self._images = images
        self._targets = targets
        self._keep_releases = keep_releases

    def ask(
        self, stack_name: str, stage: str, number: int | None, *, from_home: bool = False
    ) -> ImageAnswer:
        """Release ``number``'s image (None: the stage's latest release) in the registry
        its target's engine pulls from (``from_home``: the stack's own registry, where a
        rollback copies it from)."""
        with self._sessions() as session:
            stack = session.scalar(select(Stack).where(Stack.name == stack_name))
            if stack is None:
                raise NotFoundError(f"no stack named '{stack_name}'")
            release = records.find_release(session, stack.id, stage, number)
            number, digest, commit = release.number, release.digest, release.commit_sha or ""
            target = records.stage_config(release).target
        answer = ImageAnswer(stack_name, stage, number, digest, "", "", commit, self._keep_releases)
        images = self._images
        try:  # a registry that cannot even be reached (no client) cannot tell either
            if from_home:
                registry, repository = images.registry_of(stack_name)
            else:
                registry, repository = images.pulled_registry(stack_name, self._targets(target))
        except StackyardError as exc:
            return replace(
                answer,
                registry=f"of target {target}",
                repository=stack_name,
                present=None,
                doubt=exc.message,
            )
        answer = replace(answer, registry=registry.endpoint, repository=repository)
        try:
            present = images.has_manifest(registry, repository, digest)
        except StackyardError as exc:
            return replace(answer, present=None, doubt=exc.message)
        return answer if present else replace(answer, present=False)
