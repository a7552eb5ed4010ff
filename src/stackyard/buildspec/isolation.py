"""How the platform isolates builds and releases: the build image, the limits, the proxy.

Builds, releases and ``stackyard buildspec run`` ask a :class:`BuildIsolation` for the
command shell of one run: a fresh build container (the default), or this host when the
platform was told its builds are trusted (``stackyard up --builds-on-host``). The default
build (a Dockerfile, no build spec) runs no command of the build's own, only the engine's
RUN steps: it gets the build's Docker API (:meth:`BuildIsolation.engine_for`), whose RUN
steps nest in the cgroup of the stack's idle *limits holder*, a build container kept
between builds so that a default build does not wait for one to start.

A build's spec need not wait for its container either: once a platform has run a build
spec, it keeps one *warm* build container of its build image, made for no stack (empty
directories, no variables, a Docker API that refuses everything), which the next build
claims (:meth:`BuildIsolation.claim`) and which is never given to a second build.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from stackyard.buildspec.container import ContainerSettings, ContainerShell, size_text
from stackyard.buildspec.shell import CommandShell, LocalShell
from stackyard.errors import ConfigError, StackyardError
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
        warm_dir: Path | None = None,
        spaces: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        self.proxy = proxy
        self.spaces = spaces  # the platform's outside registry spaces (BuildScope.spaces)
        self.image = image
        self.limits = limits or BuildLimits()
        self.network_mode = network_mode
        self.platform_id = platform_id
        self._holders: dict[str, tuple[BuildContainer, BuildLimits]] = {}
        self._holders_lock = threading.Lock()
        # Build containers are removed here, after the run's result: off its critical path.
        self._removals = ThreadPoolExecutor(1, thread_name_prefix="build-container-removal")
        # The warm build container's empty directories live here (None: none is kept);
        # it is made on its own thread, once a build has asked for one.
        self.warm_dir = warm_dir
        self._warm: Future[ContainerShell] | None = None
        self._warm_wanted = False
        self._warm_possible = True
        self._warm_lock = threading.Lock()
        self._warmer = ThreadPoolExecutor(1, thread_name_prefix="warm-build-container")
        self._closed = False

    @property
    def on_host(self) -> bool:
        return self.proxy is None

    def limits_for(
        self, *, cpu: float | None = None, memory: int | None = None, pids: int | None = None
    ) -> BuildLimits:
        """The platform's build limits, lowered where a stack's stackyard.yml asks (its
        ``build.cpu``, ``build.memory``, ``build.pids_limit``); ConfigError when it asks
        for more than the platform gives: the code a limit bounds cannot raise it."""
        platform = self.limits
        asked = {
            "cpu": (cpu, platform.cpus, f"{platform.cpus:g} cores", "--build-cpus"),
            "memory": (memory, platform.memory, size_text(platform.memory), "--build-memory"),
            "pids_limit": (pids, platform.pids, f"{platform.pids} processes", "--build-pids"),
        }
        for field, (value, most, shown, option) in asked.items():
            if value is not None and value > most:
                raise ConfigError(
                    f"stackyard.yml: build.{field} asks for more than this platform's build "
                    f"limit of {shown}",
                    hint=f"lower build.{field}, or remove it to get the platform's limit; "
                    f"the platform's operator sets the limit (stackyard up {option})",
                )
        return replace(
            platform,
            cpus=cpu if cpu is not None else platform.cpus,
            memory=memory if memory is not None else platform.memory,
            pids=pids if pids is not None else platform.pids,
        )

    def scope(
        self,
        stack: str,
        login: RegistryLogin | None,
        *,
        push_elsewhere: bool = False,
        image_url: str | None = None,
        platform_registry: str | None = None,
        stage: StageRepository | None = None,
        limits: BuildLimits | None = None,
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
            limits=limits or self.limits,
            push_elsewhere=push_elsewhere,
            path=path,
            platform_registry=platform_registry if platform_registry != registry else None,
            stage=stage,
            spaces=self.spaces(),
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
        limits: BuildLimits | None = None,
    ) -> CommandShell:
        """The command shell of one run of ``stack``: a new build container holding
        ``source`` (and ``artifacts``), with ``limits`` (:meth:`limits_for`; None: the
        platform's), whose Docker API is :meth:`scope`'s; or this host."""
        if self.proxy is None:
            return LocalShell()
        settings = ContainerSettings(
            source=source,
            image=image or self.image,
            artifacts=artifacts,
            limits=limits or self.limits,
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
                limits=limits,
            ),
        )
        return ContainerShell(settings, proxy=self.proxy, later=self._remove_later)

    def claim(
        self,
        *,
        source: Path,
        artifacts: Path,
        run_id: str,
        stack: str,
        login: RegistryLogin | None,
        image: str | None = None,
        image_url: str | None = None,
        platform_registry: str | None = None,
        limits: BuildLimits | None = None,
    ) -> CommandShell | None:
        """The warm build container, given to this run of ``stack`` (its directories move
        to ``source`` and ``artifacts``, its Docker API is :meth:`scope`'s); None when there
        is none for this image and these limits (it has the platform's), and the caller
        starts a fresh one with :meth:`shell`."""
        if self.proxy is None or self.warm_dir is None or (image or self.image) != self.image:
            return None
        if limits is not None and limits != self.limits:
            return None
        with self._warm_lock:
            self._warm_wanted = self._warm_possible  # made once this run's is removed
            waiting = self._warm
            if waiting is None or not waiting.done():
                # Still starting: waiting here would hold up the checkout, which a fresh
                # container starts alongside; it stays for the next build.
                return None
            self._warm = None
        try:
            shell = waiting.result()
        except Exception as exc:  # a fresh start says what is wrong, if it still is
            log.warning("the warm build container did not start: %s", exc)
            return None
        slot = shell.settings.source.parent if shell.settings.source else None
        scope = self.scope(stack, login, image_url=image_url, platform_registry=platform_registry)
        try:
            shell.claim(run_id=run_id, docker=scope, source=source, artifacts=artifacts)
        except OSError as exc:
            # Its directories cannot be renamed into builds' (another filesystem?): one
            # made for every build and thrown away would cost more than it saves.
            log.warning("warm build containers are off: %s", exc)
            with self._warm_lock:
                self._warm_wanted = self._warm_possible = False
            shell.close()
            return None
        except StackyardError as exc:
            log.warning("could not give the warm build container to %s: %s", run_id, exc)
            shell.close()
            return None
        finally:
            if slot is not None:
                shutil.rmtree(slot, ignore_errors=True)
        return shell

    def _make_warm(self) -> ContainerShell:
        """A build container of the platform's image for no stack: empty directories at
        its mounts, no variables, a Docker API that refuses everything until claimed."""
        assert self.warm_dir is not None
        self.warm_dir.mkdir(parents=True, exist_ok=True)
        slot = Path(tempfile.mkdtemp(prefix="slot-", dir=self.warm_dir))
        (slot / "src").mkdir()
        (slot / "artifacts").mkdir()
        settings = ContainerSettings(
            source=slot / "src",
            image=self.image,
            artifacts=slot / "artifacts",
            limits=self.limits,
            network_mode=self.network_mode,
            run_id="warm",
            platform_id=self.platform_id,
            docker=BuildScope(stack="", registry=None, limits=self.limits),
        )
        try:
            return ContainerShell(
                settings, proxy=self.proxy, later=self._remove_later, claimed=False
            )
        except BaseException:
            shutil.rmtree(slot, ignore_errors=True)
            raise

    def _refill(self) -> None:
        """Start the next warm container, if builds want one and none is kept."""
        with self._warm_lock:
            if self._closed or not self._warm_wanted or self._warm is not None:
                return
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._warm = self._warmer.submit(self._make_warm)

    def _remove_later(self, removal: Callable[[], None]) -> None:
        def remove() -> None:
            try:
                removal()
            except StackyardError as exc:  # the next start removes it with the leftovers
                log.warning("removing a build container failed: %s", exc)
            # A run's container is gone: the next build's may be made now, off any run.
            self._refill()

        with contextlib.suppress(RuntimeError):  # closing: close() removes what is left
            self._removals.submit(remove)

    @contextlib.contextmanager
    def engine_for(
        self,
        stack: str,
        login: RegistryLogin,
        *,
        image_url: str | None = None,
        platform_registry: str | None = None,
        limits: BuildLimits | None = None,
    ) -> Iterator[str | None]:
        """The engine address a default build of ``stack`` uses: its own socket of the
        build proxy (:meth:`scope`'s), RUN steps nested in the stack's limits holder; None
        (the engine itself) on host."""
        if self.proxy is None:
            yield None
            return
        cgroup = self.warm(stack, limits)
        scope = self.scope(
            stack, login, image_url=image_url, platform_registry=platform_registry, limits=limits
        )
        socket = self.proxy.open(scope)
        try:
            socket.nest_builds_in(cgroup)
            yield f"unix://{socket.path}"
        finally:
            socket.close()

    def warm(self, stack: str, limits: BuildLimits | None = None) -> str | None:
        """Make sure the stack's limits holder runs (builds call this while they fetch,
        with ``limits`` None: any holder will do) with ``limits`` (the platform's when
        None): the cgroup its default builds' RUN steps nest in. A holder of other limits
        (the stack changed them) is replaced."""
        if self.proxy is None:
            return None
        wanted = limits or self.limits
        replaced = None
        with self._holders_lock:
            held = self._holders.get(stack)
            if held is not None and limits is not None and held[1] != limits:
                replaced, held = held[0], None
            if held is None:
                held = (self._start_holder(stack, wanted), wanted)
                self._holders[stack] = held
        if replaced is not None:
            _remove(replaced)
        return held[0].cgroup_parent()

    def forget(self, stack: str) -> None:
        """The stack was deleted: remove its limits holder."""
        with self._holders_lock:
            held = self._holders.pop(stack, None)
        if held is not None:
            _remove(held[0])

    def remove_leftovers(self) -> list[str]:
        """At start: the build containers this platform left when it was stopped mid-build."""
        if self.proxy is None:
            return []
        if self.warm_dir is not None:
            shutil.rmtree(self.warm_dir, ignore_errors=True)  # a stopped platform's slots
        engine = BuildContainer()
        try:
            return engine.remove_leftovers(self.platform_id)
        finally:
            engine.close()

    def remove_leftover_names(self) -> list[str]:
        """At start: the local image names builds of a stopped platform made (the build
        proxy removes a run's names when it ends; these outlived theirs), removed from the
        engine. A name the engine keeps (or an engine that does not answer) is tried again
        at the next start."""
        if self.proxy is None:
            return []
        return self.proxy.untag_leftovers()

    def close(self) -> None:
        with self._warm_lock:
            self._closed = True
            warm, self._warm = self._warm, None
        self._warmer.shutdown(wait=True)
        if warm is not None:
            with contextlib.suppress(Exception):
                warm.result().close()  # its removal is queued before the queue ends
        if self.warm_dir is not None:
            shutil.rmtree(self.warm_dir, ignore_errors=True)
        self._removals.shutdown(wait=True)
        with self._holders_lock:
            holders = [holder for holder, _ in self._holders.values()]
            self._holders.clear()
        for holder in holders:
            _remove(holder)
        if self.proxy is not None:
            self.proxy.close()

    def _start_holder(self, stack: str, limits: BuildLimits) -> BuildContainer:
        holder = BuildContainer()
        spec = BuildContainerSpec(
            image=self.image,
            name=f"sy-limits-{stack}-{secrets.token_hex(4)}"[:63],
            command=["sleep", "infinity"],
            network_mode="none",
            limits=limits,
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
