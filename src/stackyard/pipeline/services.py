"""The services the API serves, wired once from settings and adapters.

``build_services`` is called by the API server at start; tests call it with their own
settings (and data directory) and may pass their own engine and router (fakes), so
nothing is global.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from stackyard import plugins
from stackyard.deploy.controller import Controller, ControllerSettings
from stackyard.deploy.service import DeployService
from stackyard.engines.base import Engine
from stackyard.errors import require
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.imagestore import Credentials, ImageStore
from stackyard.pipeline.poller import Poller
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.runs import PipelineService
from stackyard.pipeline.stacks import StackService
from stackyard.pipeline.variables import VariableService, VariableStore, secrets_key
from stackyard.platform.credentials import RegistryCredentials
from stackyard.platform.state import ensure_platform_id
from stackyard.router.base import Router
from stackyard.secrets.vault import Vault
from stackyard.settings import Settings
from stackyard.source.remote import HostedRemotes
from stackyard.store.models import Release

log = logging.getLogger(__name__)


@dataclass
class Services:
    stacks: StackService
    builds: BuildService
    releases: ReleaseService
    images: ImageStore
    deploy: DeployService
    controller: Controller
    variables: VariableService
    runs: PipelineService
    poller: Poller

    def start(self) -> None:
        """Fail builds a stopped platform left behind, adopt every stage's tasks, then
        carry on with the pipeline runs it interrupted."""
        self.builds.fail_interrupted()
        self.controller.start()
        self.runs.resume_interrupted()
        self.poller.start()

    def close(self) -> None:
        self.poller.stop()
        self.runs.shutdown()
        self.controller.stop()
        self.builds.shutdown()
        self.images.client.close()
        self.controller.router.close()
        self.controller.engine.close()

    def secret_values(self, stack: str) -> list[str]:
        """Every value to mask in this stack's logs (the registry password, secrets)."""
        return [self.images.credentials.password, *self.variables.secret_values(stack)]

    def delete_stack(self, name: str, remotes: HostedRemotes) -> None:
        """Delete a stack and everything the platform keeps for it: its records first (so
        nothing new starts), then its tasks and routes, its git remote and cache, its
        images in the engine and its manifests in the registry. A clean-up step that fails
        is logged, and the others still run: the stack is gone either way."""
        routes = self.controller.routes_of(name)
        self.stacks.delete(name)
        steps: list[tuple[str, Callable[[], object]]] = [
            ("tasks and routes", lambda: self.controller.forget(name, routes)),
            ("git remote", lambda: remotes.remove(name)),
            ("git cache and engine images", lambda: self.builds.forget(name)),
            ("registry manifests", lambda: self.images.forget(name)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep going: each leftover is independent
                log.warning("deleting stack %s: removing its %s failed: %s", name, what, exc)


def build_services(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: RegistryCredentials,
    *,
    engine: Engine | None = None,
    router: Router | None = None,
) -> Services:
    offers = plugins.offers(settings, username=registry.username, password=registry.password)
    source = plugins.create(plugins.source(settings.source), offers["source"])
    client = plugins.create(plugins.registry(settings.registry), offers["registry"])
    images = ImageStore(client, Credentials(registry.username, registry.password))
    stacks = StackService(sessions)
    # The key is made on first use, outside the database: a stack without secrets needs none.
    store = VariableStore(sessions, Vault(lambda: secrets_key(settings.data_dir / "secrets.key")))
    work_dir = settings.data_dir / "work"
    builds = BuildService(
        sessions,
        stacks,
        source,
        images,
        logs_dir=settings.logs_dir,
        work_dir=work_dir,
        network_mode=settings.network_mode,
        secret_values=store.secret_values,
        build_inputs=store.build_inputs,
    )
    releases = ReleaseService(
        sessions,
        source,
        images,
        logs_dir=settings.logs_dir,
        work_dir=work_dir,
        secret_values=store.secret_values,
        resolve_secrets=store.resolve_secrets,
    )
    engine = engine or plugins.create(plugins.engine(settings.engine), offers["engine"])
    if settings.network_mode == "bridge":
        require(
            engine,
            "bridge_network",
            needed_for="run tasks with bridge networking (network mode: bridge)",
            hint="use the host network mode, or an engine that supports bridge networking",
        )
    router = router or plugins.create(plugins.router(settings.router), offers["router"])
    deploy: DeployService | None = None

    def rollback(stack: str, stage: str, number: int, source: str) -> Release:
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
        secret_values=store.secret_values,
        resolve_secrets=store.resolve_secrets,
    )
    deploy = DeployService(sessions, controller, releases, settings)
    runs = PipelineService(
        sessions,
        builds,
        releases,
        deploy,
        source,
        logs_dir=settings.logs_dir,
        secret_values=lambda stack: [registry.password, *store.secret_values(stack)],
    )

    def rebuild(stack: str) -> str:
        return f"pipeline run {runs.start_run(stack, trigger='build variables changed').number}"

    variables = VariableService(
        sessions, store, releases, deploy, on_build_variables_changed=rebuild
    )
    return Services(
        runs=runs,
        poller=Poller(sessions, source, runs),
        stacks=stacks,
        builds=builds,
        releases=releases,
        images=images,
        deploy=deploy,
        controller=controller,
        variables=variables,
    )
