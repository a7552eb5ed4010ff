"""A build's container, ready by the end of its checkout (a build spec's run waits for it).

When git says the commit has a build spec, the build claims the platform's warm build
container as soon as the checkout's directory exists (the warm container's empty
directory becomes it), or, with none warm, starts one (about 0.15 s to make and start)
on a thread, and the checkout fills the directory it mounts meanwhile. What the spec then
runs in is the container a late start would make; a build without a spec (or whose
stackyard.yml turns out different) discards it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from stackyard.buildspec.isolation import BuildIsolation
from stackyard.buildspec.shell import CommandShell
from stackyard.config.models import BuildConfig, StackConfig
from stackyard.config.yamlfile import load_yaml
from stackyard.errors import StackyardError
from stackyard.images.dockerproxy.rules import BuildLimits
from stackyard.registry_login import RegistryLogin
from stackyard.source.base import Source


@dataclass(frozen=True)
class SpecPlan:
    """What git says of a commit before its checkout: it has a build spec, to run in
    ``image`` (None: the platform's build image) with ``limits`` (None: the platform's)."""

    image: str | None
    limits: BuildLimits | None = None


class NoSpec:
    """What git says of a commit whose stackyard.yml loads and names no build spec in git:
    a default build, which needs no build container (nor a checkout git works in)."""

    def __repr__(self) -> str:
        return "NO_SPEC"


NO_SPEC = NoSpec()


def spec_plan(
    source: Source,
    stack: str,
    sha: str,
    context_dir: str,
    limits: Callable[[BuildConfig], BuildLimits | None] = lambda _: None,
) -> SpecPlan | NoSpec | None:
    """The plan when the commit's stackyard.yml loads and its build spec is a file in git;
    NO_SPEC when it loads and the spec is not; None when git or the file cannot tell (the
    build finds out the usual way, after the checkout). ``limits`` reads the build's
    limits from its config."""
    try:
        raw = source.read_file(stack, sha, "stackyard.yml")
        config = StackConfig()
        if raw is not None:
            document = load_yaml(raw.decode("utf-8"), "stackyard.yml")
            config = StackConfig.model_validate(document.data or {})
        context = context_dir if context_dir != "." else config.build.context
        spec = str(PurePosixPath(context) / config.build.buildspec)
        if source.read_file(stack, sha, spec) is None:
            return NO_SPEC
        plan = SpecPlan(config.build.image, limits(config.build))
    except (StackyardError, ValidationError, UnicodeDecodeError):
        return None
    return plan


class EarlyContainer:
    """One build's container, started on a thread the moment its checkout directory exists."""

    def __init__(
        self,
        isolation: BuildIsolation,
        plan: SpecPlan,
        *,
        run_id: str,
        stack: str,
        login: RegistryLogin,
        artifacts: Path,
        image_url: str | None = None,
        platform_registry: str | None = None,
    ) -> None:
        self.isolation = isolation
        self.plan = plan
        self.run_id = run_id
        self.stack = stack
        self.login = login
        self.artifacts = artifacts
        self.image_url = image_url  # the stack's repository (BuildIsolation.scope)
        self.platform_registry = platform_registry
        self.source: Path | None = None
        self._starting: Future[CommandShell] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"container-{stack}")

    def start(self, directory: Path) -> None:
        """Claim the platform's warm container for ``directory`` (the checkout, still
        empty), or start one mounting it."""
        self.source = directory
        warm = self.isolation.claim(
            source=directory,
            artifacts=self.artifacts,
            run_id=self.run_id,
            stack=self.stack,
            login=self.login,
            image=self.plan.image,
            image_url=self.image_url,
            platform_registry=self.platform_registry,
            limits=self.plan.limits,
        )
        if warm is not None:
            self._starting = Future()
            self._starting.set_result(warm)
            self._thread.shutdown(wait=False)
            return
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._starting = self._thread.submit(
            self.isolation.shell,
            source=directory,
            run_id=self.run_id,
            stack=self.stack,
            login=self.login,
            artifacts=self.artifacts,
            image=self.plan.image,
            image_url=self.image_url,
            platform_registry=self.platform_registry,
            limits=self.plan.limits,
        )
        self._thread.shutdown(wait=False)

    def take(
        self, source: Path, image: str | None, limits: BuildLimits | None = None
    ) -> CommandShell | None:
        """The started container when it suits the run (the same checkout, image and
        limits), else None (it is discarded). A failure to start raises here, as a late
        start would."""
        if self._starting is None:
            return None
        if self.source is None or source.resolve() != self.source.resolve():
            self.discard()
            return None
        if image != self.plan.image or limits != self.plan.limits:
            self.discard()
            return None
        starting, self._starting = self._starting, None
        return starting.result()

    def discard(self) -> None:
        """Not needed after all: close it once it has started."""
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.add_done_callback(_close)


def _close(started: Future[CommandShell]) -> None:
    with contextlib.suppress(Exception):
        started.result().close()
