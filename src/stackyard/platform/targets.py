"""Targets: the named places where stages run (``stackyard targets``).

A target bundles an engine (``docker`` or ``swarm``, by endpoint), the registry that
engine pulls from (an outside registry, or the platform's own), a region name, and the
router that serves its stages. ``local`` is built in: the platform's own engine,
registry and router; a stage without ``target:`` runs there. Called by the API, and by
the controller's engine factory (pipeline/services.py) to reach a stage's target's engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.config.models import default_stages
from stackyard.engines.base import EngineMisfit, EngineUnreachable
from stackyard.errors import NotFoundError, StackyardError, UsageError
from stackyard.store.models import Build, OutsideRegistry, Release, Stack, Target

LOCAL = "local"
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ENDPOINT = re.compile(r"^(unix:///\S+|(tcp|http|https|ssh)://\S+)$")
EngineKind = Literal["docker", "swarm"]


class TargetView(BaseModel):
    """A target as the API shows it; ``registry`` is ``local`` for the platform's own."""

    name: str
    engine: str
    endpoint: str
    registry: str = LOCAL
    region: str
    router: str
    builtin: bool = False
    created_at: datetime | None = None
    created_by: str = ""
    # Only in the listing: how many nodes its engine places tasks on (a docker engine: 1;
    # None: its swarm did not answer), and the stages on it (``stack/stage``).
    nodes: int | None = None
    stages: list[str] = []


class TargetCheck(BaseModel):
    """What ``targets check`` found: each part reached, or what is wrong with it."""

    target: str
    ok: bool
    engine: str  # "ok" or the problem
    registry: str
    nodes: int | None = None  # a swarm's nodes (engines that have nodes)


EngineProbe = Callable[[str, str | None], int | None]
"""(engine kind, endpoint; None: the platform's own) -> its node count (None: no nodes);
raises a StackyardError when the engine cannot be reached or used."""
RegistryProbe = Callable[[str | None], None]
"""outside registry name (None: the platform's own) -> None; raises when it cannot be
reached or refuses the credentials."""


class TargetAdd(BaseModel):
    name: str
    engine: EngineKind
    endpoint: str
    registry: str = LOCAL
    region: str = ""


def local_target(engine: str) -> TargetView:
    """The built-in target: the platform's own engine (``engine``), registry and router."""
    return TargetView(
        name=LOCAL,
        engine=engine,
        endpoint="",
        registry=LOCAL,
        region="",
        router=LOCAL,
        builtin=True,
    )


def _view(row: Target) -> TargetView:
    return TargetView(
        name=row.name,
        engine=row.engine,
        endpoint=row.endpoint,
        registry=row.registry_name or LOCAL,
        region=row.region,
        router=row.router or LOCAL,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _engine_problem(kind: str, endpoint: str | None, exc: StackyardError) -> str:
    """What ``targets check`` says of an engine it could not use, naming the engine once:
    an engine's error that carries where it was asked (EngineUnreachable, ``the Docker
    engine at X did not answer: <cause>``; EngineMisfit) names it already; any other gets
    that prefix. Its hint (what to do) follows."""
    said = exc.message
    if not isinstance(exc, EngineUnreachable | EngineMisfit):
        where = endpoint or "the platform's own"
        said = f"{kind} engine at {where}: {said}"
    # The engines' hint is about the platform's own engine (setup-host starts it, DOCKER_HOST
    # points at it); an engine at a target's endpoint is neither.
    hint = (
        exc.hint
        if endpoint is None
        else ("start that engine, or, if the endpoint is wrong, remove the target and add it again")
    )
    return f"{said}; {hint}" if hint else said


class TargetService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        local_engine: str,
        probe_engine: EngineProbe | None = None,
        probe_registry: RegistryProbe | None = None,
    ) -> None:
        self._sessions = sessions
        self._local_engine = local_engine
        self._probe_engine = probe_engine
        self._probe_registry = probe_registry

    def check(self, name: str) -> TargetCheck:
        """Reach the target's engine and its registry; say what is wrong with each."""
        target = self.get(name)
        endpoint = None if target.builtin else target.endpoint
        registry = None if target.registry == LOCAL else target.registry
        nodes: int | None = None
        try:
            if self._probe_engine is None:
                raise UsageError("this platform cannot reach engines by endpoint")
            nodes = self._probe_engine(target.engine, endpoint)
            engine = "ok"
        except StackyardError as exc:
            engine = _engine_problem(target.engine, endpoint, exc)
        try:
            if self._probe_registry is None:
                raise UsageError("this platform cannot reach registries")
            self._probe_registry(registry)
            registry_state = "ok"
        except StackyardError as exc:
            registry_state = f"registry {target.registry}: {exc.message}"
        return TargetCheck(
            target=name,
            ok=engine == registry_state == "ok",
            engine=engine,
            registry=registry_state,
            nodes=nodes,
        )

    def add(self, body: TargetAdd, *, created_by: str) -> TargetView:
        name = _valid(NAME, body.name, "target name")
        if name == LOCAL:
            raise UsageError(
                "'local' is the built-in target (the platform's own engine, registry and router)",
                hint="pick another name, e.g. eu or us-east",
            )
        if not ENDPOINT.match(body.endpoint.strip()):
            raise UsageError(
                f"engine endpoint {body.endpoint!r} of target {name} is not an endpoint",
                hint="give unix:///path/to/docker.sock or tcp://host:port",
            )
        region = _valid(REGION, body.region, "region") if body.region else ""
        with self._sessions.begin() as session:
            if _row(session, name) is not None:
                raise UsageError(
                    f"target {name} exists",
                    hint=f"remove it first: stackyard targets remove {name}",
                )
            registry = None if body.registry == LOCAL else body.registry
            if registry is not None and (
                session.scalar(select(OutsideRegistry.id).where(OutsideRegistry.name == registry))
                is None
            ):
                raise UsageError(
                    f"target {name}: no registry named '{registry}'",
                    hint="add it first (stackyard registries add), or leave --registry out "
                    "for the platform's own",
                )
            row = Target(
                name=name,
                engine=body.engine,
                endpoint=body.endpoint.strip(),
                registry_name=registry,
                region=region,
                created_by=created_by,
            )
            session.add(row)
            session.flush()
            return _view(row)

    def list(self) -> list[TargetView]:
        """``local`` first, then the stored targets by name, each with its node count
        (swarms are asked, side by side) and the stages on it."""
        with self._sessions() as session:
            rows = session.scalars(select(Target).order_by(Target.name))
            views = [local_target(self._local_engine), *(_view(row) for row in rows)]
            used = stages_on_targets(session)
        with ThreadPoolExecutor(max_workers=4) as pool:
            counts = list(pool.map(self._nodes, views))
        for view, count in zip(views, counts, strict=True):
            view.nodes = count
            view.stages = used.get(view.name, [])
        return views

    def names(self) -> set[str]:
        """Every target's name, ``local`` too: what a stage's ``target:`` may say."""
        with self._sessions() as session:
            return {LOCAL, *session.scalars(select(Target.name))}

    def _nodes(self, target: TargetView) -> int | None:
        if target.engine != "swarm":
            return 1
        if self._probe_engine is None:
            return None
        try:
            return self._probe_engine(target.engine, None if target.builtin else target.endpoint)
        except StackyardError:
            return None

    def get(self, name: str) -> TargetView:
        if name == LOCAL:
            return local_target(self._local_engine)
        with self._sessions() as session:
            return _view(_require(session, name))

    def remove(self, name: str) -> TargetView:
        if name == LOCAL:
            raise UsageError("the built-in target 'local' cannot be removed")
        with self._sessions.begin() as session:
            row = _require(session, name)
            using = stages_on_targets(session).get(name, [])
            if using:
                raise UsageError(
                    f"target {name} is used by stage(s) {', '.join(using)}",
                    hint="move those stages to another target (target: in stackyard.yml) and "
                    "release them there first",
                )
            view = _view(row)
            session.delete(row)
            return view


def stages_on_targets(session: Session) -> dict[str, list[str]]:
    """target name -> the stages (``stack/stage``, sorted) that run on it: as stackyard.yml
    at their stack's newest successful build says (where their next release goes), and as
    their latest release says (where their tasks are)."""
    found: dict[str, set[str]] = {}

    def add(stack: str, entry: dict[str, object]) -> None:
        target = str(entry.get("target") or LOCAL)
        found.setdefault(target, set()).add(f"{stack}/{entry.get('name')}")

    newest = (
        select(Build.stack_id, func.max(Build.number).label("number"))
        .where(Build.status == "SUCCEEDED")
        .group_by(Build.stack_id)
        .subquery()
    )
    builds = session.execute(
        select(Stack.name, Build.config)
        .join(Build, Build.stack_id == Stack.id)
        .join(newest, and_(Build.stack_id == newest.c.stack_id, Build.number == newest.c.number))
    )
    for stack, config in builds:
        stages = (config or {}).get("stages") or [
            stage.model_dump(mode="json") for stage in default_stages()
        ]
        for entry in stages:
            add(stack, entry)
    latest = (
        select(Release.stack_id, Release.stage, func.max(Release.number).label("number"))
        .group_by(Release.stack_id, Release.stage)
        .subquery()
    )
    releases = session.execute(
        select(Stack.name, Release.stage, Release.config)
        .join(Release, Release.stack_id == Stack.id)
        .join(
            latest,
            and_(
                Release.stack_id == latest.c.stack_id,
                Release.stage == latest.c.stage,
                Release.number == latest.c.number,
            ),
        )
    )
    for stack, stage, config in releases:
        add(stack, {"name": stage, **dict((config or {}).get("stage") or {})})
    return {target: sorted(names) for target, names in found.items()}


def _valid(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise UsageError(
            f"{what} '{value}' is not valid",
            hint="lower-case letters, digits and '-', starting with a letter or digit (at most 63)",
        )
    return value


def _row(session: Session, name: str) -> Target | None:
    return session.scalar(select(Target).where(Target.name == name))


def _require(session: Session, name: str) -> Target:
    row = _row(session, name)
    if row is None:
        known = session.scalars(select(Target.name).order_by(Target.name)).all()
        raise NotFoundError(
            f"no target named '{name}' (targets: {', '.join([LOCAL, *known])})",
            hint="list them: stackyard targets",
        )
    return row
