"""The steps of one build: source, config, build (spec or default), digest from the registry.

The build service runs one ``BuildRun`` per build on the stack's worker. A build runs the
repo's ``build.yml`` through the build spec runner, or the default build (Dockerfile, or a
generated one), then reads the digest back from the registry.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.buildspec.container import size_text
from stackyard.buildspec.isolation import BuildIsolation
from stackyard.buildspec.runner import RunSettings, Status, run_buildspec
from stackyard.config.buildspec import load_buildspec
from stackyard.config.loading import LoadedConfig, load_stack_config
from stackyard.config.models import BuildConfig
from stackyard.config.yamlfile import in_checkout
from stackyard.errors import StackyardError
from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.dockerize import detect
from stackyard.images.dockerproxy.rules import BuildLimits
from stackyard.images.imagestore import ImageStore
from stackyard.pipeline.builds.early import (
    NO_SPEC,
    EarlyContainer,
    NoSpec,
    SpecPlan,
    spec_plan,
)
from stackyard.pipeline.builds.records import BuildRecords
from stackyard.pipeline.platform_variables import SpecRun, spec_login, spec_variables
from stackyard.pipeline.variable_store import BuildInputs
from stackyard.source.base import Source
from stackyard.stacks.service import StackView


class BuildFailure(StackyardError):
    """A step of a build failed; the message goes to the build's log and record."""


@dataclass(frozen=True)
class BuildTools:
    """What every build uses: the source, the registry, the engine's builder (made for an
    engine address, or the default one), the platform's build inputs (variables and
    secrets), where it may write, and where its spec runs (the build container)."""

    source: Source
    images: ImageStore
    builder_factory: Callable[..., DockerBuilder]
    build_inputs: Callable[[str], BuildInputs]
    logs_dir: Path
    work_dir: Path
    network_mode: str
    isolation: BuildIsolation
    # The platform's target names, which stages may run on (None: not checked).
    target_names: Callable[[], Collection[str]] | None = None


class Outcome(BaseModel):
    digest: str
    exported: dict[str, str]


class BuildRun:
    """One build's steps: source, config, build (spec or default), digest from registry."""

    def __init__(
        self,
        tools: BuildTools,
        records: BuildRecords,
        stack: StackView,
        number: int,
        log: BuildLog,
        cleanup: ExitStack,
        prune_later: Callable[[str, str], None],
    ) -> None:
        self.tools = tools
        self.records = records
        self.stack = stack
        self.number = number
        self.log = log
        self.images = tools.images
        # The tags' digests before this build (a registry read that runs alongside the
        # checkout); called before the first push, so a failed build can restore them.
        self.previous: Callable[[], dict[str, str]] = dict
        self.pushed: str | None = None  # the digest the default build's push reported
        self.cleanup = cleanup  # runs once the result is recorded: checkout removal, prune
        self.prune_later = prune_later  # (stack, repository): old images leave the engine
        self.early: EarlyContainer | None = None  # the spec's container, started early

    def say(self, phase: str, text: str) -> None:
        self.log.line(phase, LineKind.MESSAGE, text)

    def execute(self, requested: str) -> Outcome:
        """Build ``requested`` (a ref or sha); the checkout stays until ``cleanup`` is closed."""
        source = self.tools.source
        stack = self.stack
        self.say("source", f"resolving {requested} of {stack.repo}")
        ref = None if requested == stack.branch else requested  # the branch: list if missing
        commit = source.resolve(stack.name, stack.repo, ref, stack.branch)
        self.records.record(stack.name, self.number, commit_sha=commit.sha)
        self.say("source", f"commit {commit.sha} {commit.subject}")
        self.tools.work_dir.mkdir(parents=True, exist_ok=True)
        tags = ["latest", commit.sha]
        # What the tags point at now, to put back if this build fails. Read from the registry
        # while the checkout and the engine's build run; needed before anything is pushed.
        with ThreadPoolExecutor(2, thread_name_prefix=f"tags-{stack.name}") as reader:
            reading = reader.submit(self.images.tag_digests, stack.name, tags)
            # The stack's limits holder starts (once) while the checkout runs.
            warming = reader.submit(self.tools.isolation.warm, stack.name)
            self.previous = reading.result
            plan = self._spec_plan(commit.sha)
            self.early = self._early_container(plan)
            # In a build container, git must work without the platform's cache; a default
            # build runs none, and takes a worktree (a clone costs ~40 ms more).
            standalone = not self.tools.isolation.on_host and plan is not NO_SPEC
            workspace = source.workspace(
                stack.name,
                commit.sha,
                self.tools.work_dir,
                standalone=standalone,
                on_directory=self.early.start if self.early is not None else None,
            )
            if self.early is not None:
                self.cleanup.callback(self.early.discard)  # unless the spec's run took it
            checkout = self.cleanup.enter_context(workspace)
            loaded = self.load_config(checkout)
            self.records.record(
                stack.name, self.number, config=loaded.config.model_dump(mode="json")
            )
            warming.result()
            try:
                exported = self.build(checkout, commit.sha, loaded)
                digest = self.digest_of(commit.sha)
            except StackyardError:
                if reading.exception() is None:  # else nothing was pushed: nothing to undo
                    self.images.restore_tags(
                        stack.name,
                        reading.result(),
                        tags=tags,
                        log=lambda text: self.say("registry", text),
                    )
                raise
        return Outcome(digest=digest, exported=exported)

    def _spec_plan(self, sha: str) -> SpecPlan | NoSpec | None:
        """What git says of the commit's build spec before the checkout (nothing on host,
        where it changes nothing)."""
        if self.tools.isolation.on_host:
            return None
        return spec_plan(
            self.tools.source, self.stack.name, sha, self.stack.context_dir, self._limits
        )

    def _early_container(self, plan: SpecPlan | NoSpec | None) -> EarlyContainer | None:
        """When git says the commit has a build spec: its container, to start alongside the
        checkout (the run would otherwise wait for it after)."""
        if not isinstance(plan, SpecPlan):
            return None
        return EarlyContainer(
            self.tools.isolation,
            plan,
            run_id=f"{self.stack.name}:{self.number}",
            stack=self.stack.name,
            login=self.images.login(self.stack.name),
            artifacts=self._artifacts_dir(),
            image_url=self.images.image_url(self.stack.name),
            platform_registry=self.images.endpoint,
        )

    def _limits(self, build: BuildConfig) -> BuildLimits | None:
        """The build container's limits: the platform's, lowered where stackyard.yml asks;
        None on host, where builds have none."""
        if self.tools.isolation.on_host:
            return None
        return self.tools.isolation.limits_for(
            cpu=build.cpu, memory=build.memory_bytes, pids=build.pids_limit
        )

    def _artifacts_dir(self) -> Path:
        return self.tools.logs_dir / "artifacts" / self.stack.name / str(self.number)

    def load_config(self, checkout: Path) -> LoadedConfig:
        known = self.tools.target_names
        loaded = load_stack_config(
            checkout, targets=None if known is None else known(), in_repo=True
        )
        for warning in loaded.warnings:
            self.say("config", f"warning: {warning}")
        names = ", ".join(s.name for s in loaded.config.stages)
        origin = "default stages" if loaded.is_default else "stackyard.yml"
        self.say("config", f"stages ({origin}): {names}")
        return loaded

    def build(self, checkout: Path, sha: str, loaded: LoadedConfig) -> dict[str, str]:
        build_config = loaded.config.build
        context_dir = (
            self.stack.context_dir if self.stack.context_dir != "." else build_config.context
        )
        context = (checkout / context_dir).resolve()
        if not context.is_dir() or not context.is_relative_to(checkout.resolve()):
            raise BuildFailure(f"build context '{context_dir}' is not a directory in the repo")
        spec_path = context / build_config.buildspec
        limits = self._limits(build_config)
        if limits is not None and limits != self.tools.isolation.limits:
            self.say(
                "config",
                f"build limits (stackyard.yml): {limits.cpus:g} cores, "
                f"{size_text(limits.memory)}, {limits.pids} processes",
            )
        inputs = self.tools.build_inputs(self.stack.name)
        if inputs.variables:
            self.say("config", f"build variables from the platform: {', '.join(inputs.variables)}")
        if spec_path.is_file():
            self.records.record(self.stack.name, self.number, kind="buildspec")
            self.previous()  # build.yml may push at any moment
            return self.run_spec(spec_path, checkout, context, sha, loaded, inputs, limits)
        self.records.record(self.stack.name, self.number, kind="default")
        if self.early is not None:
            self.early.discard()
        dockerfile = (
            self.stack.dockerfile
            if self.stack.dockerfile != "Dockerfile"
            else build_config.dockerfile
        )
        # stackyard.yml's build variables, then the platform's, become build args.
        buildargs = {**build_config.variables, **inputs.variables}
        self.default_build(context, dockerfile, sha, buildargs, limits)
        return {}

    def run_spec(
        self,
        spec_path: Path,
        checkout: Path,
        context: Path,
        sha: str,
        loaded: LoadedConfig,
        inputs: BuildInputs,
        limits: BuildLimits | None,
    ) -> dict[str, str]:
        spec, warnings = load_buildspec(spec_path, name=in_checkout(spec_path, checkout))
        for warning in warnings:
            self.say("config", f"warning: {warning}")
        name, isolation = self.stack.name, self.tools.isolation
        artifacts = self._artifacts_dir()
        artifacts.mkdir(parents=True, exist_ok=True)
        run = SpecRun(name, sha, f"{name}:{self.number}", build_number=self.number)
        image = loaded.config.build.image
        started = self.early.take(checkout, image, limits) if self.early is not None else None
        shell = started or isolation.shell(
            source=checkout,
            run_id=run.run_id,
            stack=name,
            login=self.images.login(name),
            artifacts=artifacts,
            image=image,
            image_url=self.images.image_url(name),
            platform_registry=self.images.endpoint,
            limits=limits,
        )
        with tempfile.TemporaryDirectory(prefix="stackyard-build-") as scratch, shell:
            login = spec_login(
                self.images, name, in_container=not isolation.on_host, scratch=Path(scratch)
            )
            platform = spec_variables(
                run, self.images, artifacts=shell.path_for(artifacts), login=login
            )
            settings = RunSettings(
                workdir=context,
                log_path=self.log.path,
                variables={
                    "DOCKER_BUILDKIT": "0",
                    **loaded.config.build.variables,
                    **inputs.variables,
                },
                secrets={**inputs.secrets, "REGISTRY_PASSWORD": login.password},
                platform_variables=platform,
                artifacts_dir=artifacts,
            )
            self.say("build", f"running {spec_path.name} (buildspec {spec.version})")
            result = run_buildspec(spec, settings, shell=shell)
        if result.status is not Status.SUCCEEDED:
            failed = [
                f"{p.name} (exit status {p.exit_code})"
                for p in result.phases
                if p.status is Status.FAILED
            ]
            raise BuildFailure(f"{spec_path.name} FAILED in {', '.join(failed) or 'a phase'}")
        return dict(result.exported)

    def default_build(
        self,
        context: Path,
        dockerfile: str,
        sha: str,
        variables: dict[str, str],
        limits: BuildLimits | None = None,
    ) -> None:
        dockerfile_path = (context / dockerfile).resolve()
        if not dockerfile_path.is_relative_to(context):
            raise BuildFailure(f"dockerfile '{dockerfile}' is outside the build context")
        if not dockerfile_path.is_file():
            detection = detect(context)
            self.say("dockerize", f"no {dockerfile}: detected {detection.kind}")
            for evidence in detection.evidence:
                self.say("dockerize", f"  {evidence}")
            for warning in detection.warnings:
                self.say("dockerize", f"warning: {warning}")
            dockerfile = ".stackyard.Dockerfile"
            _write_new(context / dockerfile, detection.dockerfile)
        repository = self.images.image_url(self.stack.name)
        tags = [f"{repository}:latest", f"{repository}:{sha}"]
        engine = self.tools.isolation.engine_for(
            self.stack.name,
            self.images.login(self.stack.name),
            image_url=repository,
            platform_registry=self.images.endpoint,
            limits=limits,
        )
        with engine as url:
            self._default_build(context, dockerfile, variables, repository, tags, url)
        self.cleanup.callback(self.prune_later, self.stack.name, repository)

    def _default_build(
        self,
        context: Path,
        dockerfile: str,
        variables: dict[str, str],
        repository: str,
        tags: list[str],
        engine_url: str | None,
    ) -> None:
        builder = self.tools.builder_factory(engine_url)
        try:
            self.say("build", f"docker build -f {dockerfile} (network {self.tools.network_mode})")
            builder.build(
                context,
                dockerfile=dockerfile,
                tags=tags,
                network_mode=self.tools.network_mode,
                buildargs=variables,
                on_line=lambda line: self.log.line("build", LineKind.OUTPUT, line),
            )
            # One docker push; `digest_of` then tags <sha> in the registry by copying the
            # manifest, which is cheaper than a second push of the same image.
            self.previous()
            self.say("push", f"pushing {repository}:latest")
            self.pushed = builder.push(
                repository,
                "latest",
                auth=self.images.login(self.stack.name),
                on_line=lambda line: self.log.line("push", LineKind.OUTPUT, line),
            )
            # Keep the newest image under `latest`: its layers are the next build's cache, and
            # the first task of this build starts without pulling. Older builds' images lost
            # their tag: a little after the build, those no container uses are removed.
            builder.untag(tags[1])
        finally:
            builder.close()

    def digest_of(self, sha: str) -> str:
        """Read the digest from the registry, and make sure both tags point at it."""
        name = self.stack.name
        if self.pushed is not None:
            # The default build pushed `latest` and the engine said which digest it stored:
            # one manifest copy tags <sha>, with no need to read both tags back first.
            found = {"latest": self.pushed}
        else:
            found = self.images.tag_digests(name, [sha, "latest"])
        digest = found.get(sha) or found.get("latest")
        if digest is None:
            raise BuildFailure(
                f"the build pushed neither {self.images.image_url(name)}:{sha} nor :latest",
                hint="push $IMAGE_URL:$COMMIT_SHA (or :latest) in build.yml's post_build",
            )
        for tag in (sha, "latest"):
            if found.get(tag) != digest:
                self.images.retag(name, digest, tag)
                self.say("registry", f"tagged {tag} -> {digest}")
        self.say("registry", f"image {self.images.image_url(name)}@{digest}")
        return digest


def _write_new(path: Path, text: str) -> None:
    """Write a file the repository must not have: never through a link it committed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise BuildFailure(
            f"{path.name} is in the repository, where Stackyard writes the Dockerfile it generates",
            hint=f"remove {path.name}, or commit a Dockerfile",
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
