"""How the platform isolates builds and releases: the build image, the limits, the proxy.

Builds, releases and ``stackyard buildspec run`` ask a :class:`BuildIsolation` for the
command shell of one run: a fresh build container (the default), or this host when the
platform was told its builds are trusted (``stackyard up --builds-on-host``). The default
build (a Dockerfile, no build spec) runs no command of the build's own, only the engine's
RUN steps: it gets the build's Docker API (:meth:`BuildIsolation.engine_for`), whose RUN
steps nest in the cgroup of the stack's idle *limits holder*, a build container kept
between builds so that a default build does not wait for one to start.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stackyard.buildspec.container import ContainerSettings, ContainerShell
from stackyard.buildspec.shell import CommandShell, LocalShell
from stackyard.errors import StackyardError
from stackyard.images.build_container import (
    LABEL_BUILD,
    LABEL_BUILD_PLATFORM,
    BuildContainer,
    BuildContainerSpec,
)
from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope, StageRepository
from stackyard.images.dockerproxy.server import BuildProxy
from stackyard.registry_login import RegistryLogin
from stackyard.settings import DEFAULT_BUILD_IMAGE

log = logging.getLogger(__name__)


class BuildIsolation:
    """Where the specs of builds and releases run; ``proxy`` None means on this host."""

    def __init__(
        self,
        proxy: BuildProxy | None,
        *,
        image: str = DEFAULT_BUILD_IMAGE,
        limits: BuildLimits | None = None,
        network_mode: str = "host",
        platform_id: str = "local",
    ) -> None:
        self.proxy = proxy
        self.image = image
        self.limits = limits or BuildLimits()
        self.network_mode = network_mode
        self.platform_id = platform_id
        self._holders: dict[str, BuildContainer] = {}
        self._holders_lock = threading.Lock()
        # Build containers are removed here, after the run's result: off its critical path.
        self._removals = ThreadPoolExecutor(1, thread_name_prefix="build-container-removal")

    @property
    def on_host(self) -> bool:
        return self.proxy is None

    def scope(
        self,
        stack: str,
        login: RegistryLogin | None,
        *,
        push_elsewhere: bool = False,
        image_url: str | None = None,
        platform_registry: str | None = None,
        stage: StageRepository | None = None,
    ) -> BuildScope:
        """What the build's Docker API lets a build of ``stack`` do, with these limits: push
        to its repository (``image_url``, else ``stack`` in ``login``'s registry) with
        ``login``. ``platform_registry``'s repositories are other stacks' when the stack
        pushes to an outside registry. A release also pushes to ``stage``, the stack's
        repository in its stage's target registry."""
        registry = login.registry if login is not None else None
        path = None
        if image_url is not None:
            registry, path = image_url.split("/", 1)
        return BuildScope(
            stack=stack,
            registry=registry,
            login=login,
            limits=self.limits,
            push_elsewhere=push_elsewhere,
            path=path,
            platform_registry=platform_registry if platform_registry != registry else None,
            stage=stage,
        )

    def shell(
        self,
        *,
        source: Path | None,
        run_id: str,
        stack: str,
        login: RegistryLogin | None,
        artifacts: Path | None = None,
        image: str | None = None,
        push_elsewhere: bool = False,
        image_url: str | None = None,
        platform_registry: str | None = None,
        stage: StageRepository | None = None,
    ) -> CommandShell:
        """The command shell of one run of ``stack``: a new build container holding
        ``source`` (and ``artifacts``), whose Docker API is :meth:`scope`'s; or this host."""
        if self.proxy is None:
            return LocalShell()
        settings = ContainerSettings(
            source=source,
            image=image or self.image,
            artifacts=artifacts,
            limits=self.limits,
            network_mode=self.network_mode,
            run_id=run_id,
            platform_id=self.platform_id,
            docker=self.scope(
                stack,
                login,
                push_elsewhere=push_elsewhere,
                image_url=image_url,
                platform_registry=platform_registry,
                stage=stage,
            ),
        )
        return ContainerShell(settings, proxy=self.proxy, later=self._remove_later)

    def _remove_later(self, removal: Callable[[], None]) -> None:
        def remove() -> None:
            try:
                removal()
            except StackyardError as exc:  # the next start removes it with the leftovers
                log.warning("removing a build container failed: %s", exc)

        self._removals.submit(remove)

    @contextlib.contextmanager
    def engine_for(
        self,
        stack: str,
        login: RegistryLogin,
        *,
        image_url: str | None = None,
        platform_registry: str | None = None,
    ) -> Iterator[str | None]:
        """The engine address a default build of ``stack`` uses: its own socket of the
        build proxy (:meth:`scope`'s), RUN steps nested in the stack's limits holder; None
        (the engine itself) on host."""
        if self.proxy is None:
            yield None
            return
        cgroup = self.warm(stack)
        scope = self.scope(stack, login, image_url=image_url, platform_registry=platform_registry)
        socket = self.proxy.open(scope)
        try:
            socket.nest_builds_in(cgroup)
            yield f"unix://{socket.path}"
        finally:
            socket.close()

    def warm(self, stack: str) -> str | None:
        """Make sure the stack's limits holder runs (builds call this while they fetch);
        the cgroup its default builds' RUN steps nest in."""
        if self.proxy is None:
            return None
        with self._holders_lock:
            holder = self._holders.get(stack)
            if holder is None:
                holder = self._start_holder(stack)
                self._holders[stack] = holder
        return holder.cgroup_parent()

    def forget(self, stack: str) -> None:
        """The stack was deleted: remove its limits holder."""
        with self._holders_lock:
            holder = self._holders.pop(stack, None)
        if holder is not None:
            _remove(holder)

    def remove_leftovers(self) -> list[str]:
        """At start: the build containers this platform left when it was stopped mid-build."""
        if self.proxy is None:
            return []
        engine = BuildContainer()
        try:
            return engine.remove_leftovers(self.platform_id)
        finally:
            engine.close()

    def close(self) -> None:
        self._removals.shutdown(wait=True)
        with self._holders_lock:
            holders = list(self._holders.values())
            self._holders.clear()
        for holder in holders:
            _remove(holder)
        if self.proxy is not None:
            self.proxy.close()

    def _start_holder(self, stack: str) -> BuildContainer:
        holder = BuildContainer()
        spec = BuildContainerSpec(
            image=self.image,
            name=f"sy-limits-{stack}-{secrets.token_hex(4)}"[:63],
            command=["sleep", "infinity"],
            network_mode="none",
            limits=self.limits,
            labels={LABEL_BUILD: f"{stack}:limits", LABEL_BUILD_PLATFORM: self.platform_id},
        )
        try:
            holder.create(spec)
            holder.start()
        except BaseException:
            _remove(holder)
            raise
        return holder


def _remove(holder: BuildContainer) -> None:
    try:
        holder.remove()
    except StackyardError:
        pass  # removed at the next start, with the other leftovers
    finally:
        holder.close()
