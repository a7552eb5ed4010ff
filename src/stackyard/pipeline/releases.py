"""Releases: record that a stage runs digest D with config C, by promoting, never rebuilding.

A release of stage S takes what the previous stage runs (``latest`` for the first stage),
runs the repo's ``release.yml`` or the default retag ``<previous>`` → ``<S>`` (manifest
bytes copied, no layer moves), reads the digest ``<S>`` now resolves to, and records it.

A release can also take a chosen image (``release --commit|--digest|--tag``, ``choose``):
by default only one that was released to the previous stage at some point, so nothing
reaches prod without passing staging; ``force`` skips that and the record says so.

Releases also own what else makes a release: a rollback (a new release copying an older
one's digest and config, ``copy``; the controller's automatic one is ``roll_back``), a
new config for the running image (``reconfigure``), and the registry tag ``<S>``, which
follows what the stage runs. Deploying a release is the deploy service's job.
"""

from __future__ import annotations

import builtins
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from threading import Lock, RLock
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.access.rules import Protection, four_eyes_release_refusal
from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.buildspec.isolation import BuildIsolation
from stackyard.buildspec.runner import RunSettings, Status, run_buildspec
from stackyard.config.buildspec import load_buildspec
from stackyard.config.models import BuildConfig, StackConfig
from stackyard.config.yamlfile import in_checkout
from stackyard.deploy import records
from stackyard.errors import (
    AccessDenied,
    NotFoundError,
    OperationFailed,
    StackyardError,
    UsageError,
)
from stackyard.images.dockerproxy.rules import BuildLimits
from stackyard.images.imagestore import LOCAL_TARGET, ImageStore, TargetPlace, only_local
from stackyard.images.reference import is_digest
from stackyard.pipeline.platform_variables import (
    STAGE_REGISTRY_PASSWORD,
    SpecRun,
    StageRegistry,
    spec_login,
    spec_variables,
    stage_registry,
)
from stackyard.pipeline.variable_store import runtime_variables
from stackyard.secrets.envfile import render_env_file
from stackyard.secrets.store import SecretStore
from stackyard.source.base import Source
from stackyard.source.remote import HostedRemotes
from stackyard.stacks.service import StackService
from stackyard.stacks.stages import known_stages, newest_build, require_stage, stage_names
from stackyard.statuses import ReleaseOrigin
from stackyard.store.models import Build, PipelineRun, Release, RetiredStage, Stack
from stackyard.store.numbers import next_number

logger = logging.getLogger(__name__)


class ReleaseView(BaseModel):
    """A release as the API and CLI show it."""

    model_config = ConfigDict(from_attributes=True)

    stack: str = ""
    stage: str
    number: int
    digest: str
    commit_sha: str
    build_number: int | None
    config: dict[str, Any]
    source: str
    origin: ReleaseOrigin
    forced: bool
    created_by: str
    log_path: str
    created_at: datetime


ChoiceKind = Literal["commit", "digest", "tag"]


@dataclass(frozen=True)
class ImageChoice:
    """The image a release takes instead of the previous stage's: by the commit that built
    it, its digest, or a tag of the stack's repository."""

    kind: ChoiceKind
    value: str

    @classmethod
    def given(
        cls, *, commit: str | None = None, digest: str | None = None, tag: str | None = None
    ) -> ImageChoice | None:
        """The one choice given (None for none); several at once are refused."""
        offered: tuple[tuple[ChoiceKind, str | None], ...] = (
            ("commit", commit),
            ("digest", digest),
            ("tag", tag),
        )
        given = [cls(kind, value) for kind, value in offered if value is not None]
        if len(given) > 1:
            raise UsageError(
                "choose the image one way: --commit, --digest or --tag, not "
                + " and ".join(f"--{choice.kind}" for choice in given)
            )
        if given and not given[0].value.strip():
            raise UsageError(f"--{given[0].kind} is empty", hint="give a value, or leave it out")
        return given[0] if given else None

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


def stage_target_name(config: Mapping[str, Any] | None) -> str:
    """The target a release's config snapshot (or a stage entry of stackyard.yml) names."""
    entry = (config or {}).get("stage", config) or {}
    return str(entry.get("target") or LOCAL_TARGET)


class ReleaseFailure(OperationFailed):
    """release.yml failed, or left the stage tag missing; no release was recorded."""


def _view(release: Release, stack: str) -> ReleaseView:
    view = ReleaseView.model_validate(release)
    view.stack = stack
    return view


class ReleaseService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        source: Source,
        images: ImageStore,
        secrets: SecretStore,
        *,
        logs_dir: Path,
        work_dir: Path,
        isolation: BuildIsolation,
        targets: Callable[[str], TargetPlace] = only_local,
        hosted_remotes: HostedRemotes | None = None,
    ) -> None:
        self._sessions = sessions
        self._hosted_remotes = hosted_remotes  # the platform's git remotes: pushed commits

        self._isolation = isolation  # where release.yml runs: a build container
        self._targets = targets  # a target's name -> its region and registry
        self._source = source
        self._images = images
        # What release logs mask, and the secret versions a snapshot pins (and resolves).
        self._secrets = secrets
        self._logs_dir = logs_dir
        self._work_dir = work_dir
        self._locks: dict[str, RLock] = {}
        self._locks_guard = Lock()

    # -- reading

    def list(self, stack_name: str, stage: str | None = None) -> list[ReleaseView]:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            query = select(Release).where(Release.stack_id == stack.id)
            if stage is not None:
                require_stage(session, stack, stage)
                query = query.where(Release.stage == stage)
            rows = session.scalars(query.order_by(Release.created_at.desc(), Release.id.desc()))
            return [_view(row, stack_name) for row in rows]

    def get(self, stack_name: str, stage: str, number: int) -> ReleaseView:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            require_stage(session, stack, stage)
            return _view(_release_row(session, stack, stage, number), stack_name)

    @staticmethod
    def latest(session: Session, stack_id: int, stage: str) -> Release | None:
        return session.scalar(
            select(Release)
            .where(Release.stack_id == stack_id, Release.stage == stage)
            .order_by(Release.number.desc())
        )

    @staticmethod
    def deployed(session: Session, stack_id: int, stage: str) -> Release | None:
        """The release a stage runs or is moving to: the active deployment's, else the
        current one (last COMPLETED deployment); None when it was never deployed."""
        active = records.active(session, stack_id, stage)
        if active is not None:
            return records.find_release(session, stack_id, stage, active.release_number)
        return records.current_release(session, stack_id, stage)

    def deployed_stages(self, stack_name: str, stage: str | None) -> builtins.list[str]:
        """``stage`` (else every stage of the stack) if it runs a release, in order."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            names = [stage] if stage is not None else known_stages(session, stack.id)
            return [name for name in names if self.deployed(session, stack.id, name) is not None]

    # -- releasing

    def release(
        self,
        stack_name: str,
        stage: str,
        *,
        created_by: str = "api",
        digest: str | None = None,
        choice: ImageChoice | None = None,
        force: bool = False,
        four_eyes: Protection | None = None,
    ) -> ReleaseView:
        """Promote the previous stage's digest to ``stage`` and record the release.

        A pipeline run passes its own build's ``digest``: the run promotes what it built,
        even when a newer build has moved ``latest`` meanwhile. A ``choice`` releases that
        image instead (a retag, never release.yml, which promotes the previous stage's tag);
        it must have been released to the previous stage unless ``force``. A release by hand
        to a stage under ``four_eyes`` protection is refused to whoever pushed the image's
        commit (``AccessDenied``): the gate's rule, on this way in too.
        """
        if force and choice is None:
            raise UsageError(
                "--force only applies to a chosen image",
                hint="add --commit SHA, --digest D or --tag T, or leave --force out",
            )
        with self._lock(stack_name):
            if choice is None:
                plan = self._plan(stack_name, stage, digest)
            else:
                plan = self._plan_choice(stack_name, stage, choice, force)
            if four_eyes is not None:
                self._four_eyes(plan, four_eyes, created_by)
            return self._execute(plan, created_by)

    def _four_eyes(self, plan: _ReleasePlan, protection: Protection, releaser: str) -> None:
        commit = plan.build.commit_sha
        with self._sessions() as session:
            pushers = {
                number: by
                for number, by in session.execute(
                    select(PipelineRun.number, PipelineRun.pushed_by).where(
                        PipelineRun.stack_id == plan.stack.id, PipelineRun.commit_sha == commit
                    )
                )
            }
        refusal = four_eyes_release_refusal(protection, releaser, commit, pushers)
        if refusal is not None:
            raise AccessDenied(
                refusal,
                permission=f"a deployer other than the pusher of {plan.stack.name}/{plan.stage}",
                hint=f"another deployer of {plan.stack.name}/{plan.stage} may release it, or "
                f"an approver may pass the gate where its run waits (stackyard approve "
                f"{plan.stack.name} --stage {plan.stage})",
            )

    def follow(self, stack_name: str, stage: str, number: int) -> None:
        """Release ``number`` is about to be deployed: unless it is the stage's latest, point
        the registry tag ``<stage>`` at its digest, so the next promotion promotes what the
        stage really runs. NotFoundError names a stage or release that does not exist."""
        with self._lock(stack_name), self._sessions() as session:
            stack = StackService.row(session, stack_name)
            require_stage(session, stack, stage)
            release = records.find_release(session, stack.id, stage, number)
            latest = self.latest(session, stack.id, stage)
            if latest is not None and latest.number != release.number:
                self._tag_stage(stack_name, release.digest, stage, release.config)

    # -- rollbacks: a new release with an older one's digest and config

    def rollback_target(self, stack_name: str, stage: str) -> int:
        """The release a rollback goes back to: the newest COMPLETED one whose image or
        config differs from what the stage serves now."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            require_stage(session, stack, stage)
            current = records.current_release(session, stack.id, stage)
            for row in records.completed(session, stack.id, stage):
                if current is not None and row.release_number == current.number:
                    continue
                release = records.find_release(session, stack.id, stage, row.release_number)
                if current is None or (release.digest, release.config) != (
                    current.digest,
                    current.config,
                ):
                    return row.release_number
        raise UsageError(
            f"stage {stage} has no earlier completed release to roll back to",
            hint="pass --to N to pick a release (see `stackyard releases STACK --stage STAGE`)",
        )

    def copy(
        self, stack_name: str, stage: str, number: int, *, source: str, created_by: str
    ) -> Release:
        """A new release of ``stage`` with release ``number``'s digest AND config (rollback).

        The registry tag ``<stage>`` moves back to that digest too, so the next promotion
        promotes what the stage really runs.
        """
        with self._lock(stack_name), self._sessions.begin() as session:
            return self._copy(session, stack_name, stage, number, source, created_by)

    def roll_back(self, stack_name: str, stage: str, number: int, source: str) -> Release:
        """The controller's rollback after a failed deployment: copy release ``number`` and
        queue its deployment, in one transaction (the stage loop picks it up)."""
        with self._lock(stack_name), self._sessions.begin() as session:
            copy = self._copy(session, stack_name, stage, number, source, "controller")
            records.create(
                session,
                copy.stack_id,
                stage,
                copy,
                trigger="automatic rollback",
                log_dir=records.log_dir(self._logs_dir, stack_name, stage),
            )
            session.flush()
            session.expunge(copy)
            return copy

    def _copy(
        self,
        session: Session,
        stack_name: str,
        stage: str,
        number: int,
        source: str,
        created_by: str,
    ) -> Release:
        stack = StackService.row(session, stack_name)
        require_stage(session, stack, stage)
        old = _release_row(session, stack, stage, number)
        self._tag_stage(stack_name, old.digest, stage, old.config)
        return _add_release(
            session,
            old,
            stack_id=stack.id,
            stage=stage,
            config=old.config,
            source=f"{source} (copy of release {number})",
            origin=ReleaseOrigin.ROLLBACK,
            created_by=created_by,
        )

    # -- a new config for the image a stage runs

    def reconfigure(
        self, stack_name: str, stage: str, *, created_by: str, reason: str = "variables changed"
    ) -> Release:
        """A new release of ``stage`` with the digest it runs and a fresh config snapshot
        (stackyard.yml at its commit, the platform's variables and secrets as they are now).
        The caller deploys it."""
        with self._lock(stack_name):
            with self._sessions() as session:
                stack = StackService.row(session, stack_name)
                base = self.deployed(session, stack.id, stage)
                if base is None:
                    raise UsageError(
                        f"stage {stage} of {stack_name} runs no release yet; its next release "
                        "gets the new configuration",
                    )
                build = session.scalar(
                    select(Build).where(
                        Build.stack_id == stack.id, Build.number == base.build_number
                    )
                )
                config = build.config if build is not None else None
                if config is None and base.config.get("stage"):
                    config = {"stages": [base.config["stage"]]}
            snapshot = self._snapshot(stack, stage, config, base.commit_sha)
            with self._sessions.begin() as session:
                latest = self.latest(session, stack.id, stage)
                if latest is not None and latest.digest != base.digest:
                    self._tag_stage(stack_name, base.digest, stage, snapshot)
                else:
                    self._place(stack_name, base.digest, stage, snapshot)
                return _add_release(
                    session,
                    base,
                    stack_id=stack.id,
                    stage=stage,
                    config=snapshot,
                    source=f"{reason} (image of release {base.number})",
                    origin=ReleaseOrigin.VARIABLES,
                    created_by=created_by,
                )

    def _snapshot(
        self, stack: Stack, stage: str, config: dict[str, Any] | None, commit_sha: str
    ) -> dict[str, Any]:
        """The config snapshot of a new release, with the env file template's text when the
        stage has one; a template that cannot render with these values is refused now."""
        with self._sessions() as session:
            variables = runtime_variables(session, stack.id, stage)
        snapshot = config_snapshot(
            config, stage, variables=variables, secrets=self._secrets.versions(stack.name, stage)
        )
        env_file = snapshot["stage"].get("env_file")
        if env_file:
            self._with_commit(stack, commit_sha)
            template = self._source.read_file(stack.name, commit_sha, env_file["template"])
            if template is None:
                raise NotFoundError(
                    f"env_file.template {env_file['template']} of stage {stage} is not a file "
                    f"at commit {commit_sha[:12]}",
                    hint="commit the template, or change env_file in stackyard.yml",
                )
            text = template.decode("utf-8")
            values = {
                **snapshot["variables"],
                **self._secrets.resolve(stack.name, snapshot["secrets"]),
            }
            render_env_file(env_file["template"], text, values)
            snapshot["env_file"] = {
                "template_path": env_file["template"],
                "path": env_file["path"],
                "template": text,
            }
        return snapshot

    # -- the stage tag, and the target's registry

    def stage_target(self, stack_name: str, stage: str) -> StageRegistry:
        """Where ``stage`` of ``stack_name`` runs, as stackyard.yml at the stack's newest
        successful build says: its target's region, and the registry endpoint and image URL
        its engine pulls from (the stack's own registry on ``local``). A release's own
        variables come from its config snapshot instead (``_run_releasespec``)."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            newest = newest_build(session, stack.id)
            config = newest.config if newest is not None else None
        entries = (config or {}).get("stages", [])
        entry = next((e for e in entries if e.get("name") == stage), {"name": stage})
        return stage_registry(self._images, stack_name, self._targets(stage_target_name(entry)))

    def _tag_stage(
        self,
        stack_name: str,
        digest: str,
        stage: str,
        config: Mapping[str, Any],
        log: BuildLog | None = None,
    ) -> str:
        """Point the tag ``<stage>`` at ``digest``: in the target's registry first (after
        copying the image there), then where the stack's images are. Returns the digest."""
        self._place(stack_name, digest, stage, config, log)
        return self._images.retag(stack_name, digest, stage)

    def _place(
        self,
        stack_name: str,
        digest: str,
        stage: str,
        config: Mapping[str, Any],
        log: BuildLog | None = None,
    ) -> None:
        """Copy ``digest`` into the registry of the target ``config`` names, tagged
        ``<stage>``, when it pulls from another registry than the stack's."""
        target = self._targets(stage_target_name(config))
        if target.builtin:
            return
        where = target.placement.registry if target.placement is not None else "local"
        if log is not None:
            log.line(
                "release",
                LineKind.MESSAGE,
                f"target {target.name}: copy {digest} to registry {where} as {stage}",
            )
        try:
            copied = self._images.copy_to(stack_name, digest, stage, target.placement)
        except StackyardError as exc:
            raise ReleaseFailure(
                f"copying {digest} to registry {where} of target {target.name} failed: "
                f"{exc.message}",
                hint=exc.hint or "the next release sends only the blobs still missing",
            ) from exc
        if log is not None and not copied:
            log.line("release", LineKind.MESSAGE, f"registry {where} holds the image already")

    def _lock(self, stack_name: str) -> RLock:
        with self._locks_guard:
            return self._locks.setdefault(stack_name, RLock())

    def stack_lock(self, stack_name: str) -> RLock:
        """What every release, rollback, reconfigure and tag move of the stack holds, from
        its plan to its record: retention holds it too while it reads what the stack keeps
        and deletes the rest, so a digest a release is copying or tagging is either kept
        (the release recorded first) or copied back after the delete."""
        return self._lock(stack_name)

    def _plan(self, stack_name: str, stage: str, pinned: str | None = None) -> _ReleasePlan:
        with self._sessions() as session:
            stack, previous = _stack_and_previous(session, stack_name, stage)
            if previous != "latest" and self.latest(session, stack.id, previous) is None:
                raise UsageError(
                    f"stage {stage} promotes what {previous} runs, but {previous} has no "
                    "release yet",
                    hint=f"release {previous} first: stackyard release {stack_name} "
                    f"--stage {previous}",
                )
            digest = pinned or self._images.digest(stack_name, previous)
            build = _build_for(session, stack.id, digest)
            if build is None:
                raise NotFoundError(
                    f"no successful build of {stack_name} produced {previous}'s image {digest}",
                    hint="the tag was moved outside Stackyard; build again",
                )
            if stage not in stage_names(build.config):
                raise NotFoundError(
                    f"stage {stage} is not in stackyard.yml at commit {build.commit_sha[:12]} "
                    f"(stages: {', '.join(stage_names(build.config))})"
                )
            return _ReleasePlan(stack, stage, previous, digest, build)

    def _plan_choice(
        self, stack_name: str, stage: str, choice: ImageChoice, force: bool
    ) -> _ReleasePlan:
        """The release of a chosen image: which digest and build it is, and whether it may
        go to ``stage`` (released to the previous stage before, or ``force``)."""
        with self._sessions() as session:
            stack, previous = _stack_and_previous(session, stack_name, stage)
            digest, build = self._chosen_image(session, stack, choice)
            if stage not in stage_names(build.config):
                raise NotFoundError(
                    f"stage {stage} is not in stackyard.yml at commit {build.commit_sha[:12]}, "
                    f"which built the chosen image (stages: {', '.join(stage_names(build.config))})"
                )
            if (
                previous != "latest"
                and not force
                and not _released(session, stack.id, previous, digest)
            ):
                named = "" if choice.kind == "digest" else f" ({choice})"
                raise UsageError(
                    f"image {digest}{named} was never released to {previous}, the stage "
                    f"before {stage}",
                    hint=f"release it to {previous} first: stackyard release {stack_name} "
                    f"--stage {previous} --digest {digest}; or pass --force to skip {previous}",
                )
            plan = _ReleasePlan(stack, stage, previous, digest, build)
            plan.choice, plan.forced = choice, force and previous != "latest"
            return plan

    def _chosen_image(
        self, session: Session, stack: Stack, choice: ImageChoice
    ) -> tuple[str, Build]:
        """The digest ``choice`` names in the stack's repository, and the build that made it."""
        name = stack.name
        if choice.kind == "commit":
            build = _build_of_commit(session, stack, choice.value)
            digest = str(build.digest)
        else:
            if choice.kind == "digest" and not is_digest(choice.value):
                raise UsageError(
                    f"--digest {choice.value} is not a digest (sha256:<64 hex digits>)",
                    hint=f"list the stack's images: stackyard images {name}",
                )
            try:
                digest = self._images.digest(name, choice.value)
            except NotFoundError as exc:
                what = "digest" if choice.kind == "digest" else "tag"
                raise NotFoundError(
                    f"{what} {choice.value} is not in {self._images.image_url(name)}",
                    hint=f"list the stack's images: stackyard images {name}",
                ) from exc
            found = _build_for(session, stack.id, digest)
            if found is None:
                raise NotFoundError(
                    f"no successful build of {name} produced {digest} ({choice}); only images "
                    "Stackyard built can be released",
                    hint=f"list the builds: stackyard builds {name}",
                )
            build = found
        if choice.kind == "commit":
            try:
                self._images.digest(name, digest)
            except NotFoundError as exc:
                raise NotFoundError(
                    f"the image of commit {choice.value} ({digest}) is no longer in "
                    f"{self._images.image_url(name)}",
                    hint=f"build it again: stackyard build {name} --commit {choice.value}",
                ) from exc
        return digest, build

    def _execute(self, plan: _ReleasePlan, created_by: str) -> ReleaseView:
        directory = self._logs_dir / "releases" / plan.stack.name / plan.stage
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        log_path = directory / f"attempt-{stamp}.log"
        with BuildLog(log_path, self._secrets.masker(plan.stack.name), None) as log:
            try:
                plan.snapshot = self._snapshot(
                    plan.stack, plan.stage, plan.build.config, plan.build.commit_sha
                )
                how, moved_to = self._promote(plan, log)
                # A retag knows where it moved the tag; after release.yml, ask the registry,
                # then copy what it released to the target's registry.
                digest = moved_to or self._images.digest(plan.stack.name, plan.stage)
                if moved_to is None:
                    self._place(plan.stack.name, digest, plan.stage, plan.snapshot, log)
            except StackyardError as exc:
                log.line("stackyard", LineKind.MESSAGE, f"release FAILED: {exc.message}")
                raise ReleaseFailure(
                    f"release of {plan.stack.name} {plan.stage} failed: {exc.message}",
                    hint=f"see the log: {log_path}",
                ) from exc
            log.line("stackyard", LineKind.MESSAGE, f"{plan.stage} -> {digest}")
        return self._record(plan, digest, how, created_by, log_path)

    def _promote(self, plan: _ReleasePlan, log: BuildLog) -> tuple[str, str | None]:
        """Run release.yml, or retag; how it was done, and the digest when a retag did it."""
        name = plan.stack.name
        spec_path = _releasespec_path(plan)
        in_repo = str(PurePosixPath(_context(plan)) / spec_path)
        sha = plan.build.commit_sha
        if plan.choice is not None:
            # release.yml promotes $PREVIOUS_STAGE_NAME's tag: a chosen image is retagged.
            log.line(
                "release",
                LineKind.MESSAGE,
                f"chosen image ({plan.choice}): retag {plan.digest} -> {plan.stage}"
                + (f", forced past {plan.previous}" if plan.forced else ""),
            )
            how = f"chosen {plan.choice}" + (" (forced)" if plan.forced else "")
            return how, self._tag_stage(name, plan.digest, plan.stage, plan.snapshot, log)
        # Most stacks have no release.yml: look in git first, check out only when it is there.
        # A git failure here is an error (read_file raises it), never "there is none".
        self._with_commit(plan.stack, sha)
        if self._source.read_file(name, sha, in_repo) is not None:
            standalone = not self._isolation.on_host  # git works in the build container
            with self._source.workspace(
                name, sha, self._work_dir, standalone=standalone
            ) as checkout:
                spec_file = checkout / _context(plan) / spec_path
                if not spec_file.is_file():
                    raise ReleaseFailure(
                        f"{in_repo} is a file at commit {sha[:12]}, but not in its checkout "
                        "(a symbolic link to a path that does not exist?)",
                        hint=f"commit {in_repo} as a regular file, or delete it to release "
                        "by retagging",
                    )
                self._run_releasespec(plan, spec_file, checkout, log)
                return spec_path, None
        log.line(
            "release",
            LineKind.MESSAGE,
            f"no {in_repo} at commit {sha[:12]}: the default release, a retag",
        )
        logger.info("release of %s %s: no %s, retagging", name, plan.stage, in_repo)
        log.line("release", LineKind.MESSAGE, f"retag {name}:{plan.previous} -> {plan.stage}")
        return f"retag {plan.previous}", self._tag_stage(
            name, plan.digest, plan.stage, plan.snapshot, log
        )

    def _with_commit(self, stack: Stack, sha: str) -> None:
        """Have the stack's git cache hold ``sha`` before a release reads its files. A
        restored platform has no cache (a backup leaves caches out: they are fetched
        again), nor has one whose damaged cache was deleted; a release then fetches it, from
        the platform's own git remote first (pushed commits are there), else from the
        stack's repository. A cache that holds the commit is only looked at."""
        urls = [stack.repo]
        if self._hosted_remotes is not None:
            hosted = self._hosted_remotes.repo_path(stack.name)
            if hosted.is_dir():
                urls.insert(0, str(hosted))
        for url in urls[:-1]:
            try:
                self._source.resolve(stack.name, url, sha, stack.branch)
                return
            except NotFoundError:
                continue  # not pushed there: the stack's repository may have it
        self._source.resolve(stack.name, urls[-1], sha, stack.branch)

    def _run_releasespec(
        self, plan: _ReleasePlan, spec_file: Path, checkout: Path, log: BuildLog
    ) -> None:
        spec, warnings = load_buildspec(spec_file, name=in_checkout(spec_file, checkout))
        for warning in warnings:
            log.line("config", LineKind.MESSAGE, f"warning: {warning}")
        name = plan.stack.name
        run = SpecRun(
            stack=name,
            commit_sha=plan.build.commit_sha,
            run_id=f"{name}:{plan.stage}",
            stage=plan.stage,
            previous_stage=plan.previous,
            target=self._targets(stage_target_name(plan.snapshot)),
        )
        isolation = self._isolation
        # The stage's target registry, when not the stack's own: release.yml may push the
        # stack's repository there too (TinyStacks' regional push), with its login.
        regional = stage_registry(self._images, name, run.target)
        with tempfile.TemporaryDirectory(prefix="stackyard-release-") as scratch:
            artifacts = Path(scratch) / "artifacts"
            artifacts.mkdir()
            shell = isolation.shell(
                source=checkout,
                run_id=run.run_id,
                stack=name,
                login=self._images.login(name),
                artifacts=artifacts,
                image=_build_image(plan),
                image_url=self._images.image_url(name),
                platform_registry=self._images.endpoint,
                stage=regional.repository(),
                limits=_build_limits(plan, isolation),
            )
            with shell:
                login = spec_login(
                    self._images,
                    name,
                    in_container=not isolation.on_host,
                    scratch=Path(scratch),
                    stage=regional,
                )
                masked = {"REGISTRY_PASSWORD": login.password}
                if login.stage_password is not None:
                    masked[STAGE_REGISTRY_PASSWORD] = login.stage_password
                platform = spec_variables(
                    run, self._images, artifacts=shell.path_for(artifacts), login=login
                )
                log.line("release", LineKind.MESSAGE, f"running {spec_file.name}")
                settings = RunSettings(
                    workdir=checkout / _context(plan),
                    log_path=log.path,
                    variables={"DOCKER_BUILDKIT": "0", **_stage_variables(plan)},
                    secrets={
                        **self._secrets.resolve(name, plan.snapshot.get("secrets", {})),
                        **masked,
                    },
                    platform_variables=platform,
                )
                result = run_buildspec(spec, settings, shell=shell)
        if result.status is not Status.SUCCEEDED:
            raise ReleaseFailure(f"{spec_file.name} FAILED")

    def _record(
        self, plan: _ReleasePlan, digest: str, how: str, created_by: str, attempt_log: Path
    ) -> ReleaseView:
        with self._sessions.begin() as session:
            build = _build_for(session, plan.stack.id, digest) or plan.build
            release = _add_release(
                session,
                _Image(digest, build.commit_sha, build.number, ""),
                stack_id=plan.stack.id,
                stage=plan.stage,
                config=plan.snapshot,
                source=how,
                origin=ReleaseOrigin.PROMOTION if plan.choice is None else ReleaseOrigin.CHOSEN,
                forced=plan.forced,
                created_by=created_by,
            )
            log_path = attempt_log.with_name(f"{release.number}.log")
            attempt_log.replace(log_path)
            release.log_path = str(log_path)
            session.flush()
            return _view(release, plan.stack.name)


class _Image(NamedTuple):
    """Where a new release's image comes from: a build, or an older release."""

    digest: str
    commit_sha: str
    build_number: int | None
    log_path: str


def _add_release(
    session: Session,
    image: _Image | Release,
    *,
    stack_id: int,
    stage: str,
    config: dict[str, Any],
    source: str,
    origin: ReleaseOrigin,
    forced: bool = False,
    created_by: str,
) -> Release:
    """The one place a release row is made: the stage's next number, ``image``'s digest,
    commit, build and log, and ``config``; flushed, so its number is known. A stage that
    was retired (``stackyard stages remove``) and is released again is a stage again."""
    session.execute(
        delete(RetiredStage).where(RetiredStage.stack_id == stack_id, RetiredStage.stage == stage)
    )
    release = Release(
        stack_id=stack_id,
        stage=stage,
        number=next_number(session, Release, stack_id, stage),
        digest=image.digest,
        commit_sha=image.commit_sha,
        build_number=image.build_number,
        config=config,
        source=source,
        origin=origin,
        forced=forced,
        created_by=created_by,
        log_path=image.log_path,
    )
    session.add(release)
    session.flush()
    return release


class _ReleasePlan:
    def __init__(self, stack: Stack, stage: str, previous: str, digest: str, build: Build) -> None:
        self.stack = stack
        self.stage = stage
        self.previous = previous
        self.digest = digest
        self.build = build
        self.snapshot: dict[str, Any] = {}  # the config it ships with, made before promoting
        self.choice: ImageChoice | None = None  # a chosen image, retagged, not promoted
        self.forced = False  # chosen past the previous stage (--force)


def _release_row(session: Session, stack: Stack, stage: str, number: int) -> Release:
    release = session.scalar(
        select(Release).where(
            Release.stack_id == stack.id, Release.stage == stage, Release.number == number
        )
    )
    if release is None:
        raise NotFoundError(f"stack {stack.name} has no release {number} of stage {stage}")
    return release


def _build_for(session: Session, stack_id: int, digest: str) -> Build | None:
    return session.scalar(
        select(Build)
        .where(Build.stack_id == stack_id, Build.digest == digest, Build.status == "SUCCEEDED")
        .order_by(Build.number.desc())
    )


def _stack_and_previous(session: Session, stack_name: str, stage: str) -> tuple[Stack, str]:
    """The stack, and the stage ``stage`` promotes from (``latest`` for the first), in the
    order of stackyard.yml at the newest successful build; refused without one."""
    stack = StackService.row(session, stack_name)
    newest = newest_build(session, stack.id)
    if newest is None:
        raise UsageError(
            f"stack {stack_name} has no successful build to release",
            hint=f"build it first: stackyard build {stack_name}",
        )
    return stack, _previous_stage(stage_names(newest.config), stage, stack_name)


def _released(session: Session, stack_id: int, stage: str, digest: str) -> bool:
    """Whether ``stage`` ever had a release of ``digest``."""
    return (
        session.scalar(
            select(Release.id).where(
                Release.stack_id == stack_id, Release.stage == stage, Release.digest == digest
            )
        )
        is not None
    )


def _build_of_commit(session: Session, stack: Stack, commit: str) -> Build:
    """The newest successful build of the commit that ``commit`` (a sha or its prefix)
    names; refused when no build made one, or when the prefix names several commits."""
    sha = commit.strip().lower()
    if not 4 <= len(sha) <= 64 or any(c not in "0123456789abcdef" for c in sha):
        raise UsageError(
            f"--commit {commit} is not a commit sha (4 to 64 hex digits)",
            hint=f"list the built commits: stackyard builds {stack.name}",
        )
    builds = session.scalars(
        select(Build)
        .where(
            Build.stack_id == stack.id,
            Build.commit_sha.startswith(sha, autoescape=True),
            Build.status == "SUCCEEDED",
            Build.digest.is_not(None),
        )
        .order_by(Build.number.desc())
    ).all()
    if not builds:
        raise NotFoundError(
            f"no image for commit {commit}: no build of it succeeded",
            hint=f"build it: stackyard build {stack.name} --commit {commit}",
        )
    commits = sorted({build.commit_sha for build in builds})
    if len(commits) > 1:
        raise UsageError(
            f"--commit {commit} names {len(commits)} built commits: "
            + ", ".join(c[:12] for c in commits),
            hint="give more of the sha",
        )
    return builds[0]


def _previous_stage(names: list[str], stage: str, stack_name: str) -> str:
    if stage not in names:
        raise NotFoundError(
            f"stack {stack_name} has no stage '{stage}' (stages: {', '.join(names)})",
            hint="stages come from stackyard.yml at the newest build's commit",
        )
    index = names.index(stage)
    return "latest" if index == 0 else names[index - 1]


def _context(plan: _ReleasePlan) -> str:
    if plan.stack.context_dir != ".":
        return plan.stack.context_dir
    return str((plan.build.config or {}).get("build", {}).get("context", "."))


def _build_image(plan: _ReleasePlan) -> str | None:
    """build.image of stackyard.yml at the release's commit: what release.yml runs in."""
    image = (plan.build.config or {}).get("build", {}).get("image")
    return str(image) if image else None


def _build_limits(plan: _ReleasePlan, isolation: BuildIsolation) -> BuildLimits | None:
    """The limits stackyard.yml at the release's commit sets for its build container
    (the build checked them): release.yml runs with the same."""
    if isolation.on_host:
        return None
    build = BuildConfig.model_validate((plan.build.config or {}).get("build", {}))
    return isolation.limits_for(cpu=build.cpu, memory=build.memory_bytes, pids=build.pids_limit)


def _releasespec_path(plan: _ReleasePlan) -> str:
    return str((plan.build.config or {}).get("build", {}).get("releasespec", "release.yml"))


def _stage_variables(plan: _ReleasePlan) -> dict[str, str]:
    return dict(plan.snapshot.get("variables", {}))


def config_snapshot(
    config: dict[str, Any] | None,
    stage: str,
    *,
    variables: Mapping[str, str] | None = None,
    secrets: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The configuration a release ships with: the stage's settings, its variables and the
    versions of its secrets.

    Variables, lowest precedence first: the stage's in stackyard.yml, then ``variables``
    (the platform's stack-wide runtime variables, then the stage's own).
    """
    stages = (config or StackConfig().model_dump(mode="json")).get("stages", [])
    entry: dict[str, Any] = next((e for e in stages if e.get("name") == stage), {"name": stage})
    return {
        "stage": entry,
        "variables": {**dict(entry.get("variables", {})), **(variables or {})},
        "secrets": dict(secrets or {}),
    }
