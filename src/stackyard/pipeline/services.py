"""The services the API serves, wired once from settings and adapters.

``build_services`` is called by the API server at start; tests call it with their own
settings (and data directory), so nothing is global.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from stackyard.images.registry import RegistryClient
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.imagestore import Credentials, ImageStore
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.stacks import StackService
from stackyard.platform.credentials import RegistryCredentials
from stackyard.settings import Settings
from stackyard.source.git import GitSource


@dataclass
class Services:
    stacks: StackService
    builds: BuildService
    releases: ReleaseService
    images: ImageStore

    def close(self) -> None:
        self.builds.shutdown()
        self.images.client.close()


def build_services(
    settings: Settings, sessions: sessionmaker[Session], registry: RegistryCredentials
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
    return Services(stacks=stacks, builds=builds, releases=releases, images=images)
