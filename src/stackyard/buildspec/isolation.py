"""How the platform isolates builds and releases: the build image, the limits, the proxy.

Builds, releases and ``stackyard buildspec run`` ask a :class:`BuildIsolation` for the
command shell of one run: a fresh build container (the default), or this host when the
platform was told its builds are trusted (``stackyard up --builds-on-host``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stackyard.buildspec.container import ContainerSettings, ContainerShell
from stackyard.buildspec.shell import CommandShell, LocalShell
from stackyard.images.build_container import BuildContainer
from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
from stackyard.images.dockerproxy.server import BuildProxy
from stackyard.registry_login import RegistryLogin
from stackyard.settings import DEFAULT_BUILD_IMAGE


@dataclass(frozen=True)
class BuildIsolation:
    """Where the specs of builds and releases run; ``proxy`` None means on this host."""

    proxy: BuildProxy | None
    image: str = DEFAULT_BUILD_IMAGE
    limits: BuildLimits = field(default_factory=BuildLimits)
    network_mode: str = "host"
    platform_id: str = "local"

    @property
    def on_host(self) -> bool:
        return self.proxy is None

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
    ) -> CommandShell:
        """The command shell of one run of ``stack``: a new build container holding
        ``source`` (and ``artifacts``), whose Docker API pushes to the stack's repository
        (``image_url``, else ``stack`` in ``login``'s registry) with ``login``; or this
        host. ``platform_registry``'s repositories are other stacks' when the stack pushes
        to an outside registry."""
        if self.proxy is None:
            return LocalShell()
        registry = login.registry if login is not None else None
        path = None
        if image_url is not None:
            registry, path = image_url.split("/", 1)
        scope = BuildScope(
            stack=stack,
            registry=registry,
            login=login,
            limits=self.limits,
            push_elsewhere=push_elsewhere,
            path=path,
            platform_registry=platform_registry if platform_registry != registry else None,
        )
        settings = ContainerSettings(
            source=source,
            image=image or self.image,
            artifacts=artifacts,
            limits=self.limits,
            network_mode=self.network_mode,
            run_id=run_id,
            platform_id=self.platform_id,
            docker=scope,
        )
        return ContainerShell(settings, proxy=self.proxy)

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
        if self.proxy is not None:
            self.proxy.close()
