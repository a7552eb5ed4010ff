"""The console's read model: every stack with its stages, in a fixed number of queries.

The stacks page shows 150 stage cells at once. Asking each service per stage would cost
several queries and one engine call per cell, so this module reads the same rows the
services read (stacks, builds, releases, deployments) once per page, and lists the
platform's tasks from the engine once, grouped by their stack and stage labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.engines.base import LABEL_PLATFORM, LABEL_STACK, LABEL_STAGE, Engine, Health
from stackyard.errors import StackyardError
from stackyard.pipeline.stages import stage_names
from stackyard.store.models import Build, Deployment, Release, Stack

SERVING = (Health.HEALTHY, Health.NONE)


@dataclass(frozen=True)
class StageCell:
    """One stage of a stack as a console cell: what it serves, and how its tasks are."""

    stage: str
    release: int | None = None
    digest: str | None = None
    commit: str = ""
    desired: int = 0
    running: int = 0
    healthy: int = 0
    rollout: str | None = None  # the latest deployment's status
    rollout_number: int | None = None
    rollout_reason: str = ""

    @property
    def healthy_enough(self) -> bool:
        return self.desired > 0 and self.healthy >= self.desired


@dataclass(frozen=True)
class StackRow:
    name: str
    repo: str
    branch: str
    stages: list[StageCell] = field(default_factory=list)


@dataclass(frozen=True)
class TaskCount:
    running: int = 0
    healthy: int = 0


@dataclass(frozen=True)
class Overview:
    stacks: list[StackRow]
    engine_error: str | None = None  # the engine did not answer: task counts are unknown


StageKey = tuple[int, str]


def overview(
    sessions: sessionmaker[Session],
    engine: Engine,
    platform_id: str,
    *,
    only: str | None = None,
) -> Overview:
    """Every stack (or only the one named) and each of its stages, in order."""
    with sessions() as session:
        query = select(Stack).order_by(Stack.name)
        if only is not None:
            query = query.where(Stack.name == only)
        stacks = list(session.scalars(query))
        ids = [stack.id for stack in stacks]
        stages = _stage_names(session, ids)
        serving = _serving(session, ids)
        latest = _latest_deployments(session, ids)
    counts, engine_error = _task_counts(engine, platform_id, only)
    rows = []
    for stack in stacks:
        cells = []
        for stage in stages.get(stack.id, []):
            key = (stack.id, stage)
            tasks = counts.get((stack.name, stage), TaskCount())
            cells.append(_cell(stage, serving.get(key), latest.get(key), tasks))
        rows.append(StackRow(stack.name, stack.repo, stack.branch, cells))
    return Overview(rows, engine_error)


@dataclass(frozen=True)
class _Served:
    release: int
    digest: str
    commit: str
    desired: int


@dataclass(frozen=True)
class _Rollout:
    status: str
    number: int
    reason: str


def _cell(
    stage: str, served: _Served | None, latest: _Rollout | None, tasks: TaskCount
) -> StageCell:
    return StageCell(
        stage=stage,
        release=served.release if served else None,
        digest=served.digest if served else None,
        commit=served.commit if served else "",
        desired=served.desired if served else 0,
        running=tasks.running,
        healthy=tasks.healthy,
        rollout=latest.status if latest else None,
        rollout_number=latest.number if latest else None,
        rollout_reason=latest.reason if latest else "",
    )


def _stage_names(session: Session, ids: list[int]) -> dict[int, list[str]]:
    """What ``known_stages`` says for each stack, in two queries for all of them: the
    stages of the newest successful build's stackyard.yml, then any other released one."""
    newest = (
        select(Build.stack_id, func.max(Build.number).label("number"))
        .where(Build.status == "SUCCEEDED", Build.stack_id.in_(ids))
        .group_by(Build.stack_id)
        .subquery()
    )
    names: dict[int, list[str]] = {}
    for stack_id, config in session.execute(
        select(Build.stack_id, Build.config).join(
            newest, and_(Build.stack_id == newest.c.stack_id, Build.number == newest.c.number)
        )
    ):
        names[stack_id] = stage_names(config)
    released = session.execute(
        select(Release.stack_id, Release.stage)
        .where(Release.stack_id.in_(ids))
        .group_by(Release.stack_id, Release.stage)
        .order_by(func.min(Release.id))
    )
    for stack_id, stage in released:
        known = names.setdefault(stack_id, [])
        if stage not in known:
            known.append(stage)
    return names


def _newest_per_stage(ids: list[int], *statuses: str) -> Select[int, str, int]:
    query = select(
        Deployment.stack_id, Deployment.stage, func.max(Deployment.number).label("number")
    ).where(Deployment.stack_id.in_(ids))
    if statuses:
        query = query.where(Deployment.status.in_(statuses))
    return query.group_by(Deployment.stack_id, Deployment.stage)


def _serving(session: Session, ids: list[int]) -> dict[StageKey, _Served]:
    """Each stage's current release (that of its last COMPLETED deployment), as
    ``records.current_release`` finds it, for every stage in one query of plain columns."""
    done = _newest_per_stage(ids, "COMPLETED").subquery()
    rows = session.execute(
        select(
            Release.stack_id,
            Release.stage,
            Release.number,
            Release.digest,
            Release.commit_sha,
            Deployment.desired,
        )
        .join(
            Deployment,
            and_(
                Deployment.stack_id == Release.stack_id,
                Deployment.stage == Release.stage,
                Deployment.release_number == Release.number,
            ),
        )
        .join(
            done,
            and_(
                Deployment.stack_id == done.c.stack_id,
                Deployment.stage == done.c.stage,
                Deployment.number == done.c.number,
            ),
        )
    )
    return {
        (stack_id, stage): _Served(number, digest, commit, desired)
        for stack_id, stage, number, digest, commit, desired in rows
    }


def _latest_deployments(session: Session, ids: list[int]) -> dict[StageKey, _Rollout]:
    newest = _newest_per_stage(ids).subquery()
    rows = session.execute(
        select(
            Deployment.stack_id,
            Deployment.stage,
            Deployment.status,
            Deployment.number,
            Deployment.reason,
        ).join(
            newest,
            and_(
                Deployment.stack_id == newest.c.stack_id,
                Deployment.stage == newest.c.stage,
                Deployment.number == newest.c.number,
            ),
        )
    )
    return {
        (stack_id, stage): _Rollout(status, number, reason)
        for stack_id, stage, status, number, reason in rows
    }


def _task_counts(
    engine: Engine, platform_id: str, only: str | None
) -> tuple[dict[tuple[str, str], TaskCount], str | None]:
    """Running and healthy tasks per (stack, stage), from one engine call."""
    labels = {LABEL_PLATFORM: platform_id}
    if only is not None:
        labels[LABEL_STACK] = only
    try:
        tasks = engine.list(labels)
    except StackyardError as exc:
        # The page still shows what the store knows, and says why task counts are missing.
        return {}, exc.message
    running: dict[tuple[str, str], int] = defaultdict(int)
    healthy: dict[tuple[str, str], int] = defaultdict(int)
    for task in tasks:
        if not task.running:
            continue
        key = (task.labels.get(LABEL_STACK, ""), task.labels.get(LABEL_STAGE, ""))
        running[key] += 1
        if task.health in SERVING:
            healthy[key] += 1
    return {key: TaskCount(count, healthy[key]) for key, count in running.items()}, None


def waiting_gates(steps: Iterable[tuple[str, str, str]]) -> set[str]:
    """The stages whose gate a run waits at, from (kind, stage, status) of run steps."""
    return {stage for kind, stage, status in steps if kind == "gate" and status == "WAITING"}
