"""A stage under test for the deployment controller: FakeEngine, FakeRouter, a real SQLite store.

``Yard`` builds the rows (stack, releases, deployments) straight through the models, and
drives one stage loop a tick at a time (``Controller.loop_for`` creates it without its thread).
Before each tick the controller's task watch lists the fake engine again, as its thread
would after an event: the fake's clock-driven changes (crashes, health) have no event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine as Database
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.deploy import records
from stackyard.deploy.controller import Controller, ControllerSettings, StageKey
from stackyard.engines.base import LABEL_RELEASE, Health, TaskInfo, TaskSpec
from stackyard.engines.fake import FakeEngine
from stackyard.errors import NotFoundError
from stackyard.images.imagestore import ImageStore
from stackyard.images.registry import RegistryClient
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Deployment, Event, Release, Stack

STACK = "shop"
STAGE = "dev"
KEY = StageKey(STACK, STAGE)
ROUTE_NAME = f"{STACK}-{STAGE}"
PLATFORM = "unit-platform"
REGISTRY = "127.0.0.1:5999"
ROUTE_PORTS = (31000, 31999)
V1 = "sha256:" + "1" * 64
V2 = "sha256:" + "2" * 64


class Clock:
    """The FakeEngine's clock, moved by hand: health_after and crash_after follow it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class InlineStopController(Controller):
    """Stops tasks on the calling thread, so a stop has happened when ``tick`` returns.

    The real controller hands stops to a thread pool (a stop can take ``stop_timeout``).
    """

    def stop_task(self, key: StageKey, task_id: str, timeout: float) -> None:
        self.stop_now(key, task_id, timeout)


class Manifests:
    """The registry as the controller may use it: a HEAD of a manifest by digest (asked
    before tasks start and before a rollback); any other call fails the test. Every
    digest is there unless ``deleted``; ``refusing`` answers 403 (the registry cannot tell)."""

    def __init__(self) -> None:
        self.deleted: set[str] = set()
        self.refusing = False
        self.asked: list[str] = []  # the digests asked for, in order

    def __call__(self, request: httpx.Request) -> httpx.Response:
        found = re.fullmatch(r"/v2/(.+)/manifests/(sha256:[0-9a-f]{64})", request.url.path)
        if request.method != "HEAD" or found is None:
            raise AssertionError(f"the controller must not call the registry: {request.url}")
        digest = found[2]
        self.asked.append(digest)
        if self.refusing:
            return httpx.Response(403)
        if digest in self.deleted:
            return httpx.Response(404)
        return httpx.Response(200, headers={"Docker-Content-Digest": digest})


def stage_config(replicas: int = 1, **fields: Any) -> dict[str, Any]:
    """A stage as a release snapshots it, with docker health (no probes) and no drain delay.

    Written as a user would (no ``health.path``): see the xfail test about full model dumps.
    """
    return {
        "name": STAGE,
        "replicas": replicas,
        "health": {"type": "docker"},
        "deploy": {"drain_seconds": 0, "stop_timeout": 1},
        **fields,
    }


@dataclass
class RollbackCall:
    stack: str
    stage: str
    number: int
    source: str


@dataclass
class Yard:
    """One stack with one stage, its store, fakes, and the controller that drives it."""

    tmp: Path
    database: Database
    sessions: sessionmaker[Session]
    engine: FakeEngine
    router: FakeRouter
    images: ImageStore
    clock: Clock
    stack_id: int
    manifests: Manifests
    controller: Controller = field(init=False)
    rollbacks: list[RollbackCall] = field(default_factory=list)
    # The engines of targets other than local, by name (made when a stage on one is seen).
    target_engines: dict[str, FakeEngine] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)  # the targets whose engine was made

    def __post_init__(self) -> None:
        self.controller = self.new_controller()

    # -- the control plane

    def new_controller(self) -> Controller:
        settings = ControllerSettings(
            platform_id=PLATFORM,
            logs_dir=self.tmp / "logs",
            # The controller checks a route port is free on the real loopback; stay clear of
            # 8000-8999, where platforms under test elsewhere on this machine serve stages.
            route_ports=ROUTE_PORTS,
        )
        return InlineStopController(
            self.sessions,
            self.engine,
            self.router,
            self.images,
            settings,
            rollback=self.rollback,
            engines=self.target_engine,
        )

    def target_engine(self, name: str) -> FakeEngine:
        self.made.append(name)
        if name not in self.target_engines:
            raise NotFoundError(f"no target named '{name}' (targets: local)")
        return self.target_engines[name]

    def resync(self) -> None:
        """List every engine in use again, as their watches' threads would."""
        for target, _engine in self.controller.engines.followed():
            self.controller.engines.follow(target).resync()

    def restart_controller(self) -> None:
        """The control plane dies and comes back: same store, engine and router, no memory."""
        self.controller.stop()
        self.controller = self.new_controller()

    def tick(self, times: int = 1) -> None:
        loop = self.controller.loop_for(KEY)
        for _ in range(times):
            self.resync()
            loop.tick()

    def run_once(self) -> bool:
        """One step as the loop's thread runs it (an error is recorded, not raised)."""
        self.resync()
        return self.controller.loop_for(KEY).run_once()

    def run_until(self, done: Callable[[], bool], limit: int = 20) -> int:
        """Tick until ``done()``; the number of ticks it took."""
        for ticks in range(1, limit + 1):
            self.tick()
            if done():
                return ticks
        raise AssertionError(f"not done after {limit} ticks; tasks: {self.tasks()}")

    def rollback(self, stack: str, stage: str, number: int, source: str) -> Release:
        """What ReleaseService.roll_back does, without the registry copy."""
        self.rollbacks.append(RollbackCall(stack, stage, number, source))
        with self.sessions.begin() as session:
            old = records.find_release(session, self.stack_id, stage, number)
            copy = self._add_release(session, old.digest, old.config, source=source)
            records.create(
                session,
                self.stack_id,
                stage,
                copy,
                trigger="automatic rollback",
                log_dir=self.tmp / "deployments",
            )
            session.flush()
            session.expunge(copy)
            return copy

    # -- rows

    def release(self, digest: str, *, variables: dict[str, str] | None = None, **stage: Any) -> int:
        config = {"stage": stage_config(**stage), "variables": dict(variables or {})}
        return self.release_with_config(digest, config)

    def release_with_config(self, digest: str, config: dict[str, Any]) -> int:
        with self.sessions.begin() as session:
            return self._add_release(session, digest, config, source="test").number

    def copy_release(self, number: int) -> int:
        """A new release with the digest and config of release ``number`` (a rollback)."""
        with self.sessions.begin() as session:
            old = records.find_release(session, self.stack_id, STAGE, number)
            return self._add_release(session, old.digest, old.config, source="rollback").number

    def _add_release(
        self, session: Session, digest: str, config: dict[str, Any], *, source: str
    ) -> Release:
        latest = session.scalar(
            select(func.max(Release.number)).where(
                Release.stack_id == self.stack_id, Release.stage == STAGE
            )
        )
        row = Release(
            stack_id=self.stack_id,
            stage=STAGE,
            number=(latest or 0) + 1,
            digest=digest,
            config=config,
            source=source,
        )
        session.add(row)
        session.flush()
        return row

    def deploy(self, release: int) -> int:
        """Queue a deployment of ``release``, as DeployService.deploy records it."""
        with self.sessions.begin() as session:
            row = records.find_release(session, self.stack_id, STAGE, release)
            deployment = records.create(
                session, self.stack_id, STAGE, row, trigger="test", log_dir=self.tmp / "deployments"
            )
            return deployment.number

    def deployment(self, number: int) -> Deployment:
        with self.sessions() as session:
            row = session.scalar(
                select(Deployment).where(
                    Deployment.stack_id == self.stack_id,
                    Deployment.stage == STAGE,
                    Deployment.number == number,
                )
            )
            if row is None:
                raise AssertionError(f"no deployment {number}")
            return row

    def status(self, number: int) -> str:
        return self.deployment(number).status

    def events(self, kind: str) -> list[Event]:
        with self.sessions() as session:
            return list(session.scalars(select(Event).where(Event.kind == kind)))

    def ship(self, digest: str, **stage: Any) -> int:
        """Release ``digest`` and run its deployment to COMPLETED; the deployment number."""
        number = self.deploy(self.release(digest, **stage))
        self.run_until(lambda: self.status(number) == "COMPLETED")
        return number

    # -- what the fakes say

    def tasks(self) -> list[TaskInfo]:
        return [self.engine.inspect(task_id) for task_id in self.engine.task_ids]

    def releases_running(self) -> list[str]:
        return sorted(t.labels[LABEL_RELEASE] for t in self.tasks() if t.running)

    def upstreams(self) -> list[str] | None:
        """The stage route's upstreams as the router serves them; None without a route."""
        served = self.router.served.get(ROUTE_NAME)
        return None if served is None else list(served[1])

    def routed_healthy(self) -> int:
        """Upstreams that are a running task the engine calls healthy (or without a check)."""
        serving = {
            str(t.address)
            for t in self.tasks()
            if t.running and t.health in (Health.HEALTHY, Health.NONE)
        }
        return sum(1 for upstream in self.upstreams() or [] if upstream in serving)

    def started(self, digest: str | None = None) -> list[TaskSpec]:
        """Every task spec the controller asked the engine to start (refused ones too)."""
        specs = [args[0] for args in self.engine.calls_to("start")]
        return [
            spec
            for spec in specs
            if isinstance(spec, TaskSpec) and (digest is None or spec.image.endswith(digest))
        ]

    def close(self) -> None:
        self.controller.stop()
        self.images.client.close()
        self.database.dispose()


def make_yard(tmp: Path) -> Iterator[Yard]:
    """A Yard for one test (a pytest fixture body); closed after the test."""
    database = open_database(f"sqlite:///{tmp / 'stackyard.db'}")
    migrate(database)
    sessions = session_factory(database)
    with sessions.begin() as session:
        stack = Stack(name=STACK, repo="https://example.invalid/shop.git")
        session.add(stack)
        session.flush()
        stack_id = stack.id
    manifests = Manifests()
    client = RegistryClient(
        REGISTRY,
        username="stackyard",
        password="registry-password",
        transport=httpx.MockTransport(manifests),
    )
    clock = Clock()
    yard = Yard(
        tmp=tmp,
        database=database,
        sessions=sessions,
        engine=FakeEngine(clock=clock),
        router=FakeRouter(),
        images=ImageStore(client, RegistryLogin(REGISTRY, "stackyard", "registry-password")),
        clock=clock,
        stack_id=stack_id,
        manifests=manifests,
    )
    try:
        yield yard
    finally:
        yard.close()
