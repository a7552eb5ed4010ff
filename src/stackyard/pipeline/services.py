"""The services the API serves, wired once from settings and adapters.

``open_state`` opens and migrates the state database, and ``build_services`` wires every
service on it: the API server calls both at start (so the API itself never touches the
store). Tests call ``build_services`` with their own settings, sessions and login, and may
pass their own engine and router (fakes), so nothing is global.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from stackyard import plugins
from stackyard.access.audit import AuditLog
from stackyard.access.people import PeopleService
from stackyard.access.protection import ProtectionService
from stackyard.access.tokens import TokenHasher, pepper_file
from stackyard.buildspec.isolation import BuildIsolation
from stackyard.deploy.certwatch import CertificateWatch
from stackyard.deploy.controller import Controller, ControllerSettings
from stackyard.deploy.keys import Domains
from stackyard.deploy.nodes import NodeService
from stackyard.deploy.service import DeployService
from stackyard.deploy.trafficstore import TrafficCounter
from stackyard.engines.base import PING_TIMEOUT, Engine, NetworkMode
from stackyard.errors import ComponentError, StackyardError, require
from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.dockerproxy.rules import BuildLimits
from stackyard.images.dockerproxy.server import NAMES_FILE, BuildProxy
from stackyard.images.imagestore import ImageStore, TargetPlace
from stackyard.images.registry_base import Registry
from stackyard.notify.channels import ChannelKinds, ChannelRecords
from stackyard.notify.delivery import DeliveryWorker, WorkerSettings
from stackyard.notify.outbox import Outbox
from stackyard.notify.service import NotifyService
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.poller import Poller
from stackyard.pipeline.redeploy import RedeployService
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.retention.service import RetentionService
from stackyard.pipeline.runs import PipelineService
from stackyard.pipeline.variable_store import VariableStore
from stackyard.pipeline.variables import VariableService
from stackyard.platform.acme import with_eab_hmac
from stackyard.platform.registries import RegistryService
from stackyard.platform.state import ensure_platform_id
from stackyard.platform.targets import LOCAL, TargetService
from stackyard.registry_login import RegistryLogin
from stackyard.router.base import Router
from stackyard.secrets.sql import SqlSecretStore
from stackyard.secrets.store import SecretStore
from stackyard.secrets.vault import Vault, key_file
from stackyard.settings import Settings
from stackyard.source.remote import HostedRemotes
from stackyard.stacks.service import StackService
from stackyard.store.database import migrate, open_database, session_factory

log = logging.getLogger(__name__)


# The deletion step whose leftovers the platform removes by itself (the controller's sweep).
SWEPT_STEP = "tasks and routes"


@dataclass(frozen=True)
class Leftovers:
    """What a stack's deletion could not remove, each "its <what>: <reason>"; ``swept``:
    those of them the platform removes by itself once their engine or router answers."""

    left: list[str]
    swept: list[str]


@dataclass(frozen=True)
class StateStore:
    """The platform's state database, open and migrated."""

    sessions: sessionmaker[Session]
    close: Callable[[], None]


def open_state(settings: Settings) -> StateStore:
    """Open the state database of ``settings`` and bring its schema up to date."""
    database = open_database(settings.database_url)
    migrate(database)
    return StateStore(session_factory(database), database.dispose)


@dataclass
class Services:
    stacks: StackService
    builds: BuildService
    releases: ReleaseService
    images: ImageStore
    deploy: DeployService
    redeploy: RedeployService
    controller: Controller
    nodes: NodeService
    variables: VariableService
    secrets: SecretStore
    runs: PipelineService
    poller: Poller
    people: PeopleService
    protection: ProtectionService
    audit: AuditLog
    notify: NotifyService
    registries: RegistryService
    targets: TargetService
    isolation: BuildIsolation
    retention: RetentionService
    certificates: CertificateWatch
    traffic: TrafficCounter

    def verify_engine(self) -> None:
        """UsageError when the engine answers but cannot serve as configured (a swarm engine
        on an engine that is no swarm manager); one that does not answer yet is retried by
        the controller, so that is only logged."""
        try:
            self.controller.engine.verify()
        except ComponentError as exc:
            log.warning("the engine does not answer yet (%s); the platform keeps trying", exc)

    def start(self) -> None:
        """Fail builds a stopped platform left behind (and remove their build containers),
        adopt every stage's tasks, then carry on with the pipeline runs it interrupted, and
        with the notifications still to send. Audit entries past the retention go first;
        outside registries' passwords are masked in every log from the start."""
        self.audit.prune()
        self.registries.mask_all()
        self.builds.fail_interrupted()
        try:
            for name in self.isolation.remove_leftovers():
                log.info("removed build container %s, left by a stopped platform", name)
        except StackyardError as exc:  # the platform starts without its engine all the same
            log.warning(
                "build containers a stopped platform left were not removed (the next start "
                "tries again): %s",
                exc,
            )
        for name in self.isolation.remove_leftover_names():
            log.info("removed the local image name %s, left by a stopped platform's build", name)
        self.controller.start()
        self.runs.resume_interrupted()
        self.poller.start()
        self.notify.start()
        self.retention.start()
        self.certificates.start()
        self.traffic.start()

    def close(self) -> None:
        self.traffic.stop()
        self.certificates.stop()
        self.retention.stop()
        self.poller.stop()
        self.runs.shutdown()
        self.controller.stop()
        self.builds.shutdown()
        self.notify.stop()
        self.isolation.close()
        self.images.close()
        self.controller.router.close()
        self.controller.engine.close()

    def delete_stack(self, name: str, remotes: HostedRemotes) -> Leftovers:
        """Delete a stack and everything the platform keeps for it: its records first (so
        nothing new starts), then its tasks and routes, its git remote and cache, its
        images in the engine, its manifests in the registry and its copies in the target
        registries its stages pulled from. A clean-up step that fails is logged, and the
        others still run: the stack is gone either way. Returns what was left, and why."""
        routes = self.controller.routes_of(name)
        # Where its images are, while the row still says (an outside registry, maybe).
        where, image_url = self.images.registry_of(name), self.images.image_url(name)
        left: list[str] = []
        copies = self._target_copies(name, where, left)
        # The engine's names of the images its tasks pulled from the target registries.
        pulled = [f"{client.endpoint}/{repository}" for _, (client, repository) in copies]
        self.stacks.delete(name)
        steps: list[tuple[str, Callable[[], object]]] = [
            ("secrets", lambda: self.secrets.forget(name)),
            (SWEPT_STEP, lambda: self.controller.forget(name, routes)),
            ("git remote", lambda: remotes.remove(name)),
            (
                "git cache and engine images",
                lambda: self.builds.forget(name, image_url=image_url, also=pulled),
            ),
            ("registry manifests", lambda: self.images.forget(name, where=where)),
            *(
                (f"copies in {label}", partial(self.images.forget, name, where=place))
                for label, place in copies
            ),
        ]
        swept: list[str] = []
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # keep going: each leftover is independent
                log.warning("deleting stack %s: removing its %s failed: %s", name, what, exc)
                left.append(f"its {what}: {exc}")
                if what == SWEPT_STEP:
                    swept.append(left[-1])
        return Leftovers(left, swept)

    def _target_copies(
        self, name: str, home: tuple[Registry, str], left: list[str]
    ) -> list[tuple[str, tuple[Registry, str]]]:
        """The stack's repository in each registry a target pulls from, other than ``home``
        (labelled for the output); a target whose registry cannot be reached is noted in
        ``left``."""
        places = _target_places(self.targets, self.registries)
        seen = {(home[0].endpoint, home[1])}
        copies = []
        for target in sorted(self.targets.names() - {LOCAL}):
            try:
                placement = places(target).placement
                client, repository = self.images.registry_in(name, placement)
            except StackyardError as exc:
                left.append(f"its copies in the registry of target {target}: {exc}")
                continue
            if (client.endpoint, repository) in seen:
                continue
            seen.add((client.endpoint, repository))
            copies.append((f"target {target}'s registry ({client.endpoint}/{repository})",
                           (client, repository)))  # fmt: skip
        return copies


def _engine_probe(platform_engine: Engine) -> Callable[[str, str | None], int | None]:
    """How ``targets check`` reaches an engine: the platform's own, or one made by its
    plugin for the target's endpoint (closed after) whose every call (the node count too)
    answers within ``PING_TIMEOUT``; its node count when it has nodes."""

    def probe(kind: str, endpoint: str | None) -> int | None:
        engine = (
            platform_engine
            if endpoint is None
            else target_engine(kind, endpoint, timeout=PING_TIMEOUT)
        )
        try:
            engine.ping()
            engine.verify()
            return len(engine.nodes()) if engine.supports_nodes else None
        finally:
            if engine is not platform_engine:
                engine.close()

    return probe


def target_engine(kind: str, endpoint: str, *, timeout: int | None = None) -> Engine:
    """A target's engine, made by its plugin for its endpoint. A Docker engine's tasks
    answer on the host it is reached at (``tcp://10.0.0.5:2376`` -> 10.0.0.5; a unix
    socket: this machine's loopback); a swarm's, at their nodes' addresses. ``timeout``:
    seconds its calls may take (the plugin's own default when None)."""
    host = urlsplit(endpoint).hostname  # None for unix:///…
    offer: dict[str, object] = {"endpoint": endpoint, "task_host": host or "127.0.0.1"}
    if timeout is not None:
        offer["timeout"] = timeout
    return plugins.create(plugins.engine(kind), offer)


def _target_engines(targets: TargetService) -> Callable[[str], Engine]:
    """How the controller reaches a stage's target's engine (a NotFoundError names a
    target that was removed since the release)."""

    def make(name: str) -> Engine:
        view = targets.get(name)
        return target_engine(view.engine, view.endpoint)

    return make


def _copy_place(
    images: ImageStore, places: Callable[[str], TargetPlace]
) -> Callable[[str, str], tuple[Registry, str] | None]:
    """Where a stage on a target has its stack's images copied: the stack's repository in
    the registry that target pulls from; None when that is the stack's own (as for
    ``local``), where nothing is copied."""

    def place(stack: str, target: str) -> tuple[Registry, str] | None:
        client, repository = images.registry_in(stack, places(target).placement)
        home, home_repository = images.registry_of(stack)
        if (client.endpoint, repository) == (home.endpoint, home_repository):
            return None
        return client, repository

    return place


def _target_places(
    targets: TargetService, registries: RegistryService
) -> Callable[[str], TargetPlace]:
    """How releases find a target's region and registry (a NotFoundError names a target
    that was removed since the build)."""

    def place(name: str) -> TargetPlace:
        view = targets.get(name)
        placement = None if view.registry == LOCAL else registries.placement_named(view.registry)
        return TargetPlace(view.name, view.region, placement, builtin=view.builtin)

    return place


def build_services(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: RegistryLogin,
    *,
    engine: Engine | None = None,
    router: Router | None = None,
    channel_kinds: ChannelKinds | None = None,
    notify_settings: WorkerSettings | None = None,
    collect_garbage: Callable[[], str] | None = None,
) -> Services:
    """Every service, wired. ``collect_garbage`` runs the registry's garbage collection
    (the API server passes the supervisor's; without it retention only deletes
    manifests)."""
    settings = with_eab_hmac(settings)
    offers = plugins.offers(settings, username=registry.username, password=registry.password)
    source = plugins.create(plugins.source(settings.source), offers["source"])
    client = plugins.create(plugins.registry(settings.registry), offers["registry"])
    stacks = StackService(sessions)
    # The key is made on first use, outside the database: a stack without secrets needs none.
    # Every log masks the registry password too, whatever the stack.
    secrets = SqlSecretStore(
        sessions,
        Vault(lambda: key_file(settings.data_dir / "secrets.key")),
        platform_secrets=[registry.password, settings.acme_eab_hmac],
    )
    outbox = Outbox()
    notify = _notify_service(
        settings, sessions, secrets, outbox, channel_kinds or ChannelKinds(), notify_settings
    )
    registries = RegistryService(sessions, secrets)
    images = ImageStore(
        client, registry, placement=registries.placement, connect=registries.connect
    )
    variable_store = VariableStore(sessions, secrets)
    work_dir = settings.data_dir / "work"
    engine = engine or plugins.create(plugins.engine(settings.engine), offers["engine"])
    targets = TargetService(
        sessions,
        local_engine=settings.engine,
        probe_engine=_engine_probe(engine),
        probe_registry=lambda name: images.client.ping() if name is None else registries.ping(name),
    )
    network_mode = task_network_mode(settings, engine)
    platform_id = ensure_platform_id(settings.platform_id_file)
    isolation = build_isolation(settings, network_mode, platform_id, spaces=registries.spaces)
    builds = BuildService(
        sessions,
        stacks,
        source,
        images,
        logs_dir=settings.logs_dir,
        work_dir=work_dir,
        network_mode=network_mode,
        isolation=isolation,
        secret_values=secrets.mask_values,
        build_inputs=variable_store.build_inputs,
        outbox=outbox,
        target_names=targets.names,
    )
    places = _target_places(targets, registries)
    releases = ReleaseService(
        sessions,
        source,
        images,
        secrets,
        logs_dir=settings.logs_dir,
        work_dir=work_dir,
        isolation=isolation,
        targets=places,
        hosted_remotes=HostedRemotes(settings.remotes_dir),
    )
    router = router or plugins.create(plugins.router(settings.router), offers["router"])
    platform_id = ensure_platform_id(settings.platform_id_file)
    controller = Controller(
        sessions,
        engine,
        router,
        images,
        ControllerSettings(
            platform_id=platform_id,
            logs_dir=settings.logs_dir,
            network_mode=network_mode,
            task_registry=settings.task_registry,
            keep_releases=settings.keep_releases,
            domains=Domains(settings.base_domain, settings.default_tls),
        ),
        rollback=releases.roll_back,
        secret_values=secrets.mask_values,
        resolve_secrets=secrets.resolve,
        outbox=outbox,
        targets=places,
        engines=_target_engines(targets),
        target_names=targets.names,
    )
    traffic = TrafficCounter(
        sessions,
        router,
        retention_days=settings.traffic_retention_days,
        interval=settings.traffic_count_interval,
    )
    deploy = DeployService(sessions, controller, settings, traffic)
    redeploy = RedeployService(releases, deploy)
    protection = ProtectionService(sessions)
    runs = PipelineService(
        sessions,
        builds,
        releases,
        deploy,
        source,
        protection,
        logs_dir=settings.logs_dir,
        secret_values=secrets.mask_values,
        outbox=outbox,
    )

    def rebuild(stack: str, by: str) -> str:
        run = runs.start_run(stack, trigger="build variables changed", pushed_by=by)
        return f"pipeline run {run.number}"

    variables = VariableService(
        sessions, variable_store, secrets, redeploy, on_build_variables_changed=rebuild
    )
    return Services(
        runs=runs,
        poller=Poller(sessions, source, runs),
        stacks=stacks,
        builds=builds,
        releases=releases,
        images=images,
        deploy=deploy,
        redeploy=redeploy,
        controller=controller,
        nodes=NodeService(sessions, controller),
        variables=variables,
        secrets=secrets,
        people=PeopleService(sessions, TokenHasher(lambda: pepper_file(settings.pepper_file))),
        protection=protection,
        audit=AuditLog(sessions, retention_days=settings.audit_retention_days),
        notify=notify,
        registries=registries,
        targets=targets,
        isolation=isolation,
        retention=RetentionService(
            sessions,
            images,
            engine,
            platform_id=platform_id,
            data_dir=settings.data_dir,
            keep_releases=settings.keep_releases,
            between_builds=builds.between_builds,
            # Only the engine that keeps its images on this machine has images to prune;
            # with any other (the fake one of unit tests) the machine's images are not ours.
            builder_factory=DockerBuilder if engine.supports_local_images else None,
            collect_garbage=collect_garbage,
            every=settings.retention_every,
            copy_place=_copy_place(images, places),
            target_tasks=controller.engines.other_tasks,
            stack_lock=releases.stack_lock,
        ),
        certificates=CertificateWatch(
            sessions,
            router,
            outbox,
            warning_days=settings.certificate_warning_days,
            interval=settings.certificate_check_interval,
        ),
        traffic=traffic,
    )


def task_network_mode(settings: Settings, engine: Engine) -> NetworkMode:
    """The network mode of tasks and builds: the setting, or with ``auto`` bridge where the
    engine has a bridge network (a task's port is then published on 127.0.0.1 only, and
    it has no path to the host's loopback), else host."""
    if settings.network_mode == "bridge":
        require(
            engine,
            "bridge_network",
            needed_for="run tasks with bridge networking (network mode: bridge)",
            hint="use the host network mode, or an engine that supports bridge networking",
        )
        return "bridge"
    if settings.network_mode == "host":
        return "host"
    try:
        return "bridge" if engine.has_bridge_network() else "host"
    except ComponentError as exc:
        # The platform starts without its engine (each deployment then names it); host is
        # the mode of an engine without a bridge, and of every platform before ``auto``.
        log.warning(
            "network mode auto: %s; tasks and builds use host networking until the platform "
            "restarts with the engine answering (--network-mode bridge insists on bridge)",
            exc,
        )
        return "host"


def build_isolation(
    settings: Settings,
    network_mode: str,
    platform_id: str,
    *,
    spaces: Callable[[], tuple[str, ...]] = tuple,
) -> BuildIsolation:
    """Where builds and releases run their specs: a build container per run, with the
    build proxy, unless the platform was told its builds are trusted; ``spaces``: where
    in outside registries the platform keeps images (no build reads another's there)."""
    limits = BuildLimits(
        cpus=settings.build_cpus,
        memory=settings.build_memory,
        pids=settings.build_pids,
        disk=settings.build_disk,
    )
    return BuildIsolation(
        proxy=None
        if settings.builds_on_host
        else BuildProxy(names_file=_names_file(settings), scratch_names=True),
        image=settings.build_image,
        limits=limits,
        network_mode=network_mode,
        platform_id=platform_id,
        # Beside the builds' checkouts and under the logs' filesystem: a warm container's
        # directories are renamed into place when a build claims it.
        warm_dir=settings.data_dir / "work" / "warm",
        spaces=spaces,
    )


def _names_file(settings: Settings) -> Path:
    """The build proxy's record of which stack named which local image: state a backup
    keeps (it lived in ``run/``, the data plane's runtime, before; moved on first use)."""
    names = settings.data_dir / NAMES_FILE
    earlier = settings.run_dir / NAMES_FILE
    if earlier.is_file() and not names.exists():
        earlier.replace(names)
    return names


def _notify_service(
    settings: Settings,
    sessions: sessionmaker[Session],
    secrets: SecretStore,
    outbox: Outbox,
    kinds: ChannelKinds,
    worker_settings: WorkerSettings | None,
) -> NotifyService:
    """Channels refuse the platform's own endpoints as receivers (Caddy's admin API is on
    unix sockets, out of a URL's reach); links in messages point at the console's public
    URL."""
    own = ((settings.host, settings.api_port), (settings.host, settings.registry_port))
    channels = ChannelRecords(sessions, secrets, kinds, platform_endpoints=own)
    worker_settings = worker_settings or WorkerSettings()
    if not worker_settings.console_url:
        worker_settings = replace(worker_settings, console_url=settings.console_url)
    worker = DeliveryWorker(
        sessions, channels, kinds, mask_values=secrets.mask_values, settings=worker_settings
    )
    return NotifyService(sessions, outbox, channels, worker)
