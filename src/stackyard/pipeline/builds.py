"""Builds: turn one commit of a stack into one image, stored in the registry by digest.

``BuildService.start`` records a build and queues it on the stack's own worker, so builds
of one stack run one at a time and never interleave tags. A build runs the repo's
``build.yml`` through the build spec runner, or the default build (Dockerfile, or a
generated one), then reads the digest back from the registry.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock, Timer

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.buildspec.runner import RunSettings, Status, run_buildspec
from stackyard.config.buildspec import load_buildspec
from stackyard.config.loading import LoadedConfig, load_stack_config
from stackyard.errors import NotFoundError, StackyardError
from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.dockerize import detect
from stackyard.images.imagestore import ImageStore
from stackyard.pipeline.variable_store import BuildInputs
from stackyard.secrets.masking import SecretMasker
from stackyard.source.base import Source
from stackyard.stacks.service import StackService, StackView
from stackyard.store.models import Build
from stackyard.store.numbers import next_number

logger = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED")
PRUNE_DELAY = 5.0  # seconds after a build before its stack's unused old images are removed


class BuildView(BaseModel):
    """A build as the API and CLI show it."""

    model_config = ConfigDict(from_attributes=True)

    stack: str = ""
    number: int
    commit_sha: str
    requested_ref: str
    status: str
    kind: str
    digest: str | None
    exported: dict[str, str]
    log_path: str
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BuildFailure(StackyardError):
    """A step of a build failed; the message goes to the build's log and record."""


def _view(build: Build, stack: str) -> BuildView:
    view = BuildView.model_validate(build)
    view.stack = stack
    return view


class BuildService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        stacks: StackService,
        source: Source,
        images: ImageStore,
        *,
        logs_dir: Path,
        work_dir: Path,
        network_mode: str,
        builder_factory: Callable[[], DockerBuilder] = DockerBuilder,
        secret_values: Callable[[str], list[str]] = lambda _stack: [],
        build_inputs: Callable[[str], BuildInputs] = lambda _stack: BuildInputs(),
    ) -> None:
        self._sessions = sessions
        self._stacks = stacks
        self._source = source
        self._images = images
        self._logs_dir = logs_dir
        self._work_dir = work_dir
        self._network_mode = network_mode
        self._builder_factory = builder_factory
        # The stack's secret values (masked in build logs), and its build variables and
        # secrets from the platform.
        self._secret_values = secret_values
        self._build_inputs = build_inputs
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._workers_lock = Lock()
        self._prunes: dict[str, Timer] = {}  # per stack: the next removal of old images

    # -- reading

    def list(self, stack_name: str) -> list[BuildView]:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            rows = session.scalars(
                select(Build).where(Build.stack_id == stack.id).order_by(Build.number.desc())
            )
            return [_view(row, stack_name) for row in rows]

    def get(self, stack_name: str, number: int) -> BuildView:
        with self._sessions() as session:
            return _view(self._row(session, stack_name, number), stack_name)

    def _row(self, session: Session, stack_name: str, number: int) -> Build:
        stack = StackService.row(session, stack_name)
        build = session.scalar(
            select(Build).where(Build.stack_id == stack.id, Build.number == number)
        )
        if build is None:
            last = session.scalar(select(func.max(Build.number)).where(Build.stack_id == stack.id))
            known = f"builds 1 to {last}" if last else "no builds yet"
            raise NotFoundError(f"stack {stack_name} has no build {number} ({known})")
        return build

    def build_for_digest(self, session: Session, stack_id: int, digest: str) -> Build | None:
        """The newest successful build that produced ``digest``."""
        return session.scalar(
            select(Build)
            .where(Build.stack_id == stack_id, Build.digest == digest, Build.status == "SUCCEEDED")
            .order_by(Build.number.desc())
        )

    # -- running

    def start(
        self, stack_name: str, ref: str | None = None, *, source_url: str | None = None
    ) -> BuildView:
        """Record a QUEUED build and queue it behind the stack's earlier builds.

        ``source_url`` fetches the commit from elsewhere than the stack's repo (the
        platform's own git remote, after a push).
        """
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            number = next_number(session, Build, stack.id)
            log_path = self._logs_dir / "builds" / stack_name / f"{number}.log"
            build = Build(
                stack_id=stack.id,
                number=number,
                requested_ref=ref or stack.branch,
                status="QUEUED",
                exported={},
                log_path=str(log_path),
            )
            session.add(build)
            session.flush()
            view = _view(build, stack_name)
        self._worker(stack_name).submit(self._run, stack_name, number, source_url)
        return view

    def wait(self, stack_name: str) -> None:
        """Block until every queued build of the stack has finished (tests, shutdown)."""
        marker: Future[None] = self._worker(stack_name).submit(lambda: None)
        marker.result()

    def shutdown(self) -> None:
        with self._workers_lock:
            workers = list(self._workers.values())
            prunes = list(self._prunes.values())
        for prune in prunes:
            prune.cancel()
        for worker in workers:
            worker.shutdown(wait=True, cancel_futures=False)

    def prune_later(self, stack_name: str, repository: str) -> None:
        """Remove the stack's unused old images from the engine PRUNE_DELAY seconds from
        now: not while the build's own release starts its first task, which the engine's
        image removals would slow down. A newer build moves the time on."""
        timer = Timer(PRUNE_DELAY, self._prune, args=(stack_name, repository))
        timer.daemon = True
        with self._workers_lock:
            earlier = self._prunes.pop(stack_name, None)
            self._prunes[stack_name] = timer
        if earlier is not None:
            earlier.cancel()
        timer.start()

    def _prune(self, stack_name: str, repository: str) -> None:
        with self._workers_lock:
            self._prunes.pop(stack_name, None)
        builder = self._builder_factory()
        try:
            removed = builder.prune(repository)
        except StackyardError as exc:  # the engine keeps a few more images until next time
            logger.warning("pruning old images of %s failed: %s", repository, exc)
            return
        finally:
            builder.close()
        if removed:
            logger.info("removed %d unused image(s) of %s", len(removed), repository)

    def forget(self, stack_name: str) -> None:
        """The stack was deleted: drop its git cache and its images from the engine."""
        with self._workers_lock:
            pending = self._prunes.pop(stack_name, None)
        if pending is not None:
            pending.cancel()
        self._source.remove(stack_name)
        builder = self._builder_factory()
        try:
            builder.remove_repository(self._images.image_url(stack_name))
        finally:
            builder.close()

    def fail_interrupted(self) -> int:
        """At start: builds left QUEUED or RUNNING by a stopped platform become FAILED."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(Build)
                .where(Build.status.in_(("QUEUED", "RUNNING")))
                .values(
                    status="FAILED",
                    error="interrupted: the platform stopped before this build finished; "
                    "start a new build",
                    finished_at=datetime.now(UTC),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def _worker(self, stack_name: str) -> ThreadPoolExecutor:
        with self._workers_lock:
            worker = self._workers.get(stack_name)
            if worker is None:
                worker = ThreadPoolExecutor(1, thread_name_prefix=f"build-{stack_name}")
                self._workers[stack_name] = worker
            return worker

    def _run(self, stack_name: str, number: int, source_url: str | None = None) -> None:
        stack = self._stacks.get(stack_name)
        if source_url:
            stack = stack.model_copy(update={"repo": source_url})
        with self._sessions.begin() as session:
            build = self._row(session, stack_name, number)
            build.status = "RUNNING"
            build.started_at = datetime.now(UTC)
            log_path = Path(build.log_path)
            ref = build.requested_ref
        masker = SecretMasker([self._images.credentials.password, *self._secret_values(stack_name)])
        # The checkout is removed after the result is recorded: whoever waits for the build
        # (a pipeline run about to deploy it) need not wait for the clean-up too.
        cleanup = ExitStack()
        with BuildLog(log_path, masker, None) as log:
            try:
                outcome = _BuildRun(self, stack, number, ref, log, cleanup).execute()
            except StackyardError as exc:
                log.line("stackyard", LineKind.MESSAGE, f"build FAILED: {exc.message}")
                self._finish(stack_name, number, status="FAILED", error=exc.message)
            except Exception as exc:  # a bug must still end the build, with its cause
                log.line("stackyard", LineKind.MESSAGE, f"build FAILED (internal error): {exc!r}")
                self._finish(stack_name, number, status="FAILED", error=f"internal error: {exc!r}")
                raise
            else:
                log.line("stackyard", LineKind.MESSAGE, f"build SUCCEEDED: {outcome.digest}")
                self._finish(stack_name, number, status="SUCCEEDED", outcome=outcome)
            finally:
                changes.end(log_path)  # whoever waits for the end: a run, a log follower
                try:
                    cleanup.close()
                except Exception as exc:  # the build's result stands; the leftover is noted
                    logger.warning("build %s of %s: removing its checkout failed: %s",
                                   number, stack_name, exc)  # fmt: skip

    def _record(self, stack_name: str, number: int, **values: object) -> None:
        with self._sessions.begin() as session:
            build = self._row(session, stack_name, number)
            for key, value in values.items():
                setattr(build, key, value)

    def _finish(
        self,
        stack_name: str,
        number: int,
        *,
        status: str,
        error: str = "",
        outcome: _Outcome | None = None,
    ) -> None:
        values: dict[str, object] = {
            "status": status,
            "error": error,
            "finished_at": datetime.now(UTC),
        }
        if outcome is not None:
            values.update(digest=outcome.digest, exported=outcome.exported)
        self._record(stack_name, number, **values)


class _Outcome(BaseModel):
    digest: str
    exported: dict[str, str]


class _BuildRun:
    """One build's steps: source, config, build (spec or default), digest from registry."""

    def __init__(
        self,
        service: BuildService,
        stack: StackView,
        number: int,
        ref: str,
        log: BuildLog,
        cleanup: ExitStack,
    ) -> None:
        self.service = service
        self.stack = stack
        self.number = number
        self.ref = ref
        self.log = log
        self.images = service._images
        # The tags' digests before this build (a registry read that runs alongside the
        # checkout); called before the first push, so a failed build can restore them.
        self.previous: Callable[[], dict[str, str]] = dict
        self.pushed: str | None = None  # the digest the default build's push reported
        self.cleanup = cleanup  # runs once the result is recorded: checkout removal, prune

    def say(self, phase: str, text: str) -> None:
        self.log.line(phase, LineKind.MESSAGE, text)

    def execute(self) -> _Outcome:
        """Run the build; the checkout stays until ``cleanup`` is closed."""
        source = self.service._source
        stack = self.stack
        self.say("source", f"resolving {self.ref} of {stack.repo}")
        ref = None if self.ref == stack.branch else self.ref  # the branch: list them if missing
        commit = source.resolve(stack.name, stack.repo, ref, stack.branch)
        self.service._record(stack.name, self.number, commit_sha=commit.sha)
        self.say("source", f"commit {commit.sha} {commit.subject}")
        self.service._work_dir.mkdir(parents=True, exist_ok=True)
        tags = ["latest", commit.sha]
        # What the tags point at now, to put back if this build fails. Read from the registry
        # while the checkout and the engine's build run; needed before anything is pushed.
        with ThreadPoolExecutor(1, thread_name_prefix=f"tags-{stack.name}") as reader:
            reading = reader.submit(self.images.tag_digests, stack.name, tags)
            self.previous = reading.result
            workspace = source.workspace(stack.name, commit.sha, self.service._work_dir)
            checkout = self.cleanup.enter_context(workspace)
            loaded = self.load_config(checkout)
            self.service._record(
                stack.name, self.number, config=loaded.config.model_dump(mode="json")
            )
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
        return _Outcome(digest=digest, exported=exported)

    def load_config(self, checkout: Path) -> LoadedConfig:
        loaded = load_stack_config(checkout)
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
        inputs = self.service._build_inputs(self.stack.name)
        if inputs.variables:
            self.say("config", f"build variables from the platform: {', '.join(inputs.variables)}")
        if spec_path.is_file():
            self.service._record(self.stack.name, self.number, kind="buildspec")
            self.previous()  # build.yml may push at any moment
            return self.run_spec(spec_path, context, sha, loaded, inputs)
        self.service._record(self.stack.name, self.number, kind="default")
        dockerfile = (
            self.stack.dockerfile
            if self.stack.dockerfile != "Dockerfile"
            else build_config.dockerfile
        )
        # stackyard.yml's build variables, then the platform's, become build args.
        buildargs = {**build_config.variables, **inputs.variables}
        self.default_build(context, dockerfile, sha, buildargs)
        return {}

    def platform_variables(self, sha: str, artifacts: Path) -> dict[str, str]:
        image_url = self.images.image_url(self.stack.name)
        return {
            "STACK_NAME": self.stack.name,
            "COMMIT_SHA": sha,
            "REGISTRY_ENDPOINT": self.images.endpoint,
            "IMAGE_URL": image_url,
            "ECR_ENDPOINT": self.images.endpoint,
            "ECR_IMAGE_URL": image_url,
            "S3_BUCKET": str(artifacts),
            "CODEBUILD_BUILD_ID": f"{self.stack.name}:{self.number}",
            "CODEBUILD_BUILD_NUMBER": str(self.number),
            "CODEBUILD_RESOLVED_SOURCE_VERSION": sha,
        }

    def run_spec(
        self,
        spec_path: Path,
        context: Path,
        sha: str,
        loaded: LoadedConfig,
        inputs: BuildInputs,
    ) -> dict[str, str]:
        spec, warnings = load_buildspec(spec_path)
        for warning in warnings:
            self.say("config", f"warning: {warning}")
        with tempfile.TemporaryDirectory(prefix="stackyard-build-") as scratch:
            docker_config = self.images.docker_config(Path(scratch) / "docker")
            artifacts = self.service._logs_dir / "artifacts" / self.stack.name / str(self.number)
            artifacts.mkdir(parents=True, exist_ok=True)
            credentials = self.images.credentials
            platform = {
                **self.platform_variables(sha, artifacts),
                "DOCKER_CONFIG": str(docker_config),
                "REGISTRY_USERNAME": credentials.username,
                "REGISTRY_PASSWORD": credentials.password,
            }
            settings = RunSettings(
                workdir=context,
                log_path=self.log.path,
                variables={
                    "DOCKER_BUILDKIT": "0",
                    **loaded.config.build.variables,
                    **inputs.variables,
                },
                secrets={**inputs.secrets, "REGISTRY_PASSWORD": credentials.password},
                platform_variables=platform,
                artifacts_dir=artifacts,
            )
            self.say("build", f"running {spec_path.name} (buildspec {spec.version})")
            result = run_buildspec(spec, settings)
        if result.status is not Status.SUCCEEDED:
            failed = [
                f"{p.name} (exit status {p.exit_code})"
                for p in result.phases
                if p.status is Status.FAILED
            ]
            raise BuildFailure(f"{spec_path.name} FAILED in {', '.join(failed) or 'a phase'}")
        return dict(result.exported)

    def default_build(
        self, context: Path, dockerfile: str, sha: str, variables: dict[str, str]
    ) -> None:
        dockerfile_path = (context / dockerfile).resolve()
        if not dockerfile_path.is_relative_to(context):
            raise BuildFailure(f"dockerfile '{dockerfile}' is outside the build context")
        if not dockerfile_path.is_file():
            detection = detect(context)
            self.say("dockerize", f"no {dockerfile}: detected {detection.kind}")
            for evidence in detection.evidence:
                self.say("dockerize", f"  {evidence}")
            dockerfile = ".stackyard.Dockerfile"
            (context / dockerfile).write_text(detection.dockerfile, encoding="utf-8")
        repository = self.images.image_url(self.stack.name)
        tags = [f"{repository}:latest", f"{repository}:{sha}"]
        builder = self.service._builder_factory()
        try:
            self.say(
                "build", f"docker build -f {dockerfile} (network {self.service._network_mode})"
            )
            builder.build(
                context,
                dockerfile=dockerfile,
                tags=tags,
                network_mode=self.service._network_mode,
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
                auth=self.images.credentials,
                on_line=lambda line: self.log.line("push", LineKind.OUTPUT, line),
            )
            # Keep the newest image under `latest`: its layers are the next build's cache, and
            # the first task of this build starts without pulling. Older builds' images lost
            # their tag: a little after the build, those no container uses are removed.
            builder.untag(f"{repository}:{sha}")
        finally:
            builder.close()
        self.cleanup.callback(self.service.prune_later, self.stack.name, repository)

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
