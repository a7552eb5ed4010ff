"""The services the API serves, wired once from settings and adapters.

``build_services`` is called by the API server at start; tests call it with their own
settings (and data directory) and may pass their own engine and router (fakes), so
nothing is global.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from stackyard import plugins
from stackyard.deploy.controller import Controller, ControllerSettings
from stackyard.deploy.service import DeployService
from stackyard.engines.base import Engine
from stackyard.images.registry import RegistryClient
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.imagestore import Credentials, ImageStore
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.stacks import StackService
from stackyard.platform.credentials import RegistryCredentials
from stackyard.platform.state import ensure_platform_id
from stackyard.router.base import Router
from stackyard.settings import Settings
from stackyard.source.git import GitSource


@dataclass
class Services:
    stacks: StackService
    builds: BuildService
    releases: ReleaseService
    images: ImageStore
    deploy: DeployService
    controller: Controller

    def start(self) -> None:
        """Fail builds a stopped platform left behind, then adopt every stage's tasks."""
        self.builds.fail_interrupted()
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
        self.builds.shutdown()
        self.images.client.close()
        self.controller.router.close()
        self.controller.engine.close()


def build_services(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: RegistryCredentials,
    *,
    engine: Engine | None = None,
    router: Router | None = None,
) -> Services:
    source = GitSource(settings.data_dir / "git")
    client = RegistryClient(
        settings.registry_endpoint, username=registry.username, password=registry.password
    )
    images = ImageStore(client, Credentials(registry.username, registry.password))
    stacks = StackService(sessions)
    work_dir = settings.data_dir / "work"
    builds = BuildService(
        sessions,
        stacks,
        source,
        images,
        logs_dir=settings.logs_dir,
        work_dir=work_dir,
        network_mode=settings.network_mode,
    )
    releases = ReleaseService(
        sessions, source, images, logs_dir=settings.logs_dir, work_dir=work_dir
    )
    engine = engine or plugins.load("engine", settings.engine)()
    router = router or plugins.load("router", settings.router)(
        settings.caddy_admin_url, host_port=settings.http_port
    )
    deploy: DeployService | None = None

    def rollback(stack: str, stage: str, number: int, source: str):  # type: ignore[no-untyped-def]
        if deploy is None:
            raise RuntimeError("services are not wired yet")
        return deploy.rollback_for_controller(stack, stage, number, source)

    controller = Controller(
        sessions,
        engine,
        router,
        images,
        ControllerSettings(
            platform_id=ensure_platform_id(settings.platform_id_file),
            logs_dir=settings.logs_dir,
            network_mode=settings.network_mode,
        ),
        rollback=rollback,
    )
    deploy = DeployService(sessions, controller, releases, settings)
    return Services(
        stacks=stacks,
        builds=builds,
        releases=releases,
        images=images,
        deploy=deploy,
        controller=controller,
    )
