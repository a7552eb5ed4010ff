"""The build service: what the API and pipeline runs call to build a commit of a stack.

``start`` records a build and queues it on the stack's own worker, so builds of one stack
run one at a time and never interleave tags. A little after a default build, the stack's
old images leave the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from threading import Lock, Timer

from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.buildspec.isolation import BuildIsolation
from stackyard.errors import StackyardError
from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.imagestore import ImageStore
from stackyard.notify.outbox import Outbox
from stackyard.pipeline.builds.records import BuildRecords, BuildView
from stackyard.pipeline.builds.runner import BuildRun, BuildTools
from stackyard.pipeline.variable_store import BuildInputs
from stackyard.secrets.masking import SecretMasker
from stackyard.source.base import Source
from stackyard.stacks.service import StackService
from stackyard.statuses import BuildStatus

logger = logging.getLogger(__name__)

PRUNE_DELAY = 5.0  # seconds after a build before its stack's unused old images are removed


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
        isolation: BuildIsolation,
        builder_factory: Callable[..., DockerBuilder] = DockerBuilder,
        secret_values: Callable[[str], list[str]] = lambda _stack: [],
        build_inputs: Callable[[str], BuildInputs] = lambda _stack: BuildInputs(),
        outbox: Outbox | None = None,
        target_names: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._records = BuildRecords(sessions, logs_dir, outbox)
        self._stacks = stacks
        self._tools = BuildTools(
            source=source,
            images=images,
            builder_factory=builder_factory,
            build_inputs=build_inputs,
            logs_dir=logs_dir,
            work_dir=work_dir,
            network_mode=network_mode,
            isolation=isolation,
            target_names=target_names,
        )
        # The stack's secret values, masked in build logs.
        self._secret_values = secret_values
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._workers_lock = Lock()
        self._prunes: dict[str, Timer] = {}  # per stack: the next removal of old images

    # -- reading

    def list(self, stack_name: str) -> list[BuildView]:
        return self._records.list(stack_name)

    def get(self, stack_name: str, number: int) -> BuildView:
        return self._records.get(stack_name, number)

    # -- running

    def start(
        self, stack_name: str, ref: str | None = None, *, source_url: str | None = None
    ) -> BuildView:
        """Record a QUEUED build and queue it behind the stack's earlier builds.

        ``source_url`` fetches the commit from elsewhere than the stack's repo (the
        platform's own git remote, after a push).
        """
        view = self._records.create(stack_name, ref)
        self._worker(stack_name).submit(self._run, stack_name, view.number, source_url)
        return view

    def wait(self, stack_name: str) -> None:
        """Block until every queued build of the stack has finished (tests, shutdown)."""
        marker: Future[None] = self._worker(stack_name).submit(lambda: None)
        marker.result()

    def between_builds(self, stack_name: str, action: Callable[[], None]) -> None:
        """Run ``action`` on the stack's build worker, after the builds queued before it
        and before any queued after: no build of the stack pushes meanwhile (retention
        deletes the stack's old manifests this way)."""
        self._worker(stack_name).submit(action).result()

    def shutdown(self) -> None:
        with self._workers_lock:
            workers = list(self._workers.values())
            prunes = list(self._prunes.values())
        for prune in prunes:
            prune.cancel()
        for worker in workers:
            worker.shutdown(wait=True, cancel_futures=False)

    def fail_interrupted(self) -> int:
        """At start: builds left QUEUED or RUNNING by a stopped platform become FAILED."""
        return self._records.fail_interrupted()

    def prune_later(self, stack_name: str, repository: str) -> None:
        """Remove the stack's unused old images from the engine PRUNE_DELAY seconds from
        now: not while the build's own release starts its first task, which the engine's
        image removals would slow down. A newer build moves the time on. The removal runs
        on the stack's build worker, between two of its builds: an image removed while a
        build of the same Dockerfile looks for its cache fails that build ("unable to find
        image")."""
        timer = Timer(PRUNE_DELAY, self._prune_between_builds, args=(stack_name, repository))
        timer.daemon = True
        with self._workers_lock:
            earlier = self._prunes.pop(stack_name, None)
            self._prunes[stack_name] = timer
        if earlier is not None:
            earlier.cancel()
        timer.start()

    def _prune_between_builds(self, stack_name: str, repository: str) -> None:
        with self._workers_lock:
            self._prunes.pop(stack_name, None)
        try:
            self._worker(stack_name).submit(self._prune, stack_name, repository)
        except RuntimeError:  # the worker was shut down: the platform is stopping
            logger.info("pruning old images of %s: left for the next build", repository)

    def _prune(self, stack_name: str, repository: str) -> None:
        builder = self._tools.builder_factory()
        try:
            removed = builder.prune(repository)
        except StackyardError as exc:  # the engine keeps a few more images until next time
            logger.warning("pruning old images of %s failed: %s", repository, exc)
            return
        finally:
            builder.close()
        if removed:
            logger.info("removed %d unused image(s) of %s", len(removed), repository)

    def forget(
        self, stack_name: str, *, image_url: str | None = None, also: Sequence[str] = ()
    ) -> None:
        """The stack was deleted: drop its git cache and its images from the engine
        (``image_url``: its repository, read before the stack's row went; ``also``: its
        repositories in target registries, whose images the engine pulled for its tasks)."""
        with self._workers_lock:
            pending = self._prunes.pop(stack_name, None)
        if pending is not None:
            pending.cancel()
        self._tools.source.remove(stack_name)
        self._tools.isolation.forget(stack_name)
        builder = self._tools.builder_factory()
        try:
            builder.remove_repository(image_url or self._tools.images.image_url(stack_name))
            for repository in also:
                builder.remove_repository(repository)
        finally:
            builder.close()

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
        build = self._records.start(stack_name, number)
        log_path = Path(build.log_path)
        masker = SecretMasker(
            [self._tools.images.credentials.password, *self._secret_values(stack_name)]
        )
        # The checkout is removed after the result is recorded: whoever waits for the build
        # (a pipeline run about to deploy it) need not wait for the clean-up too.
        cleanup = ExitStack()
        with BuildLog(log_path, masker, None) as log:
            run = BuildRun(
                self._tools, self._records, stack, number, log, cleanup, self.prune_later
            )
            try:
                outcome = run.execute(build.requested_ref)
            except StackyardError as exc:
                log.line("stackyard", LineKind.MESSAGE, f"build FAILED: {exc.message}")
                if exc.hint:  # what to do next, where the user reads the failure
                    log.line("stackyard", LineKind.MESSAGE, f"hint: {exc.hint}")
                self._records.finish(stack_name, number, BuildStatus.FAILED, error=exc.message)
            except Exception as exc:  # a bug must still end the build, with its cause
                log.line("stackyard", LineKind.MESSAGE, f"build FAILED (internal error): {exc!r}")
                self._records.finish(
                    stack_name, number, BuildStatus.FAILED, error=f"internal error: {exc!r}"
                )
                raise
            else:
                log.line("stackyard", LineKind.MESSAGE, f"build SUCCEEDED: {outcome.digest}")
                self._records.finish(
                    stack_name,
                    number,
                    BuildStatus.SUCCEEDED,
                    digest=outcome.digest,
                    exported=outcome.exported,
                )
            finally:
                changes.end(log_path)  # whoever waits for the end: a run, a log follower
                try:
                    cleanup.close()
                except Exception as exc:  # the build's result stands; the leftover is noted
                    logger.warning("build %s of %s: removing its checkout failed: %s",
                                   number, stack_name, exc)  # fmt: skip
