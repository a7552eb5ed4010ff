"""What every stage serves and how its tasks are, for many stacks at once: the console's grid.

``DeployService.overview`` builds it from the same lookups and the same task health as
``tasks`` and ``check`` (stacks.stages, deploy.records, the controller's health checks),
only batched: a fixed number of queries and one engine call however many stages there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stackyard.deploy import records
from stackyard.stacks.stages import known_stages_of
from stackyard.store.models import Deployment, Release, Stack, StageRoute

StageKey = tuple[str, str]  # (stack name, stage)


@dataclass(frozen=True)
class TaskCount:
    """A stage's running tasks, and how many of them serve (``DeployService.serving``)."""

    running: int = 0
    healthy: int = 0


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
    undeployed_release: int | None = None  # the newest release, when never deployed
    # The stage's HTTPS names, as the certificate watch last saw them (deploy/certwatch):
    # the worst state (ok, expiring, failed, expired) and the names in it; None: no HTTPS.
    certificate: str | None = None
    certificate_names: tuple[str, ...] = ()

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
class Overview:
    stacks: list[StackRow]
    engine_error: str | None = None  # the engine did not answer: task counts are unknown


def stack_rows(
    session: Session, counts: Mapping[StageKey, TaskCount], *, only: str | None = None
) -> list[StackRow]:
    """Every stack (or only the one named) with each of its stages, in order."""
    query = select(Stack).order_by(Stack.name)
    if only is not None:
        query = query.where(Stack.name == only)
    stacks: Sequence[Stack] = session.scalars(query).all()
    ids = [stack.id for stack in stacks]
    stages = known_stages_of(session, ids)
    # The same queries as current_release and the newest deployment, for every stage at
    # once, reading only the columns a cell shows (the console draws 150 cells a second).
    serving = {
        (stack_id, stage): _Served(number, digest, commit, desired)
        for stack_id, stage, number, digest, commit, desired in session.execute(
            records.serving(ids).with_only_columns(
                Release.stack_id,
                Release.stage,
                Release.number,
                Release.digest,
                Release.commit_sha,
                Deployment.desired,  # the current release's replicas, as `check` counts
            )
        )
    }
    latest = {
        (stack_id, stage): _Rollout(status, number, reason)
        for stack_id, stage, status, number, reason in session.execute(
            records.newest(ids).with_only_columns(
                Deployment.stack_id,
                Deployment.stage,
                Deployment.status,
                Deployment.number,
                Deployment.reason,
            )
        )
    }
    undeployed = {
        (stack_id, stage): number
        for stack_id, stage, number in session.execute(records.undeployed(ids))
    }
    certificates = {
        (stack_id, stage): certificate_state(notices or {}, [str(host), *(aliases or [])])
        for stack_id, stage, host, aliases, notices in session.execute(
            select(
                StageRoute.stack_id,
                StageRoute.stage,
                StageRoute.host,
                StageRoute.aliases,
                StageRoute.certificate_notices,
            ).where(
                StageRoute.stack_id.in_(ids),
                StageRoute.host.is_not(None),
                StageRoute.tls != "off",
            )
        )
    }
    rows = []
    for stack in stacks:
        cells = [
            replace(
                _cell(
                    stage,
                    serving.get((stack.id, stage)),
                    latest.get((stack.id, stage)),
                    counts.get((stack.name, stage), TaskCount()),
                ),
                undeployed_release=undeployed.get((stack.id, stage)),
                **certificates.get((stack.id, stage), {}),
            )
            for stage in stages.get(stack.id, [])
        ]
        rows.append(StackRow(stack.name, stack.repo, stack.branch, cells))
    return rows


CERTIFICATE_ORDER = ("ok", "expiring", "failed", "expired")  # from good to worst


def certificate_state(notices: Mapping[str, str], names: Sequence[str]) -> dict[str, Any]:
    """A cell's certificate fields: the worst recorded state of the stage's names (a name
    not recorded yet is ok: valid or still being obtained) and the names in that state."""
    states = {name: notices.get(name, "ok") for name in names}
    worst = max(states.values(), key=CERTIFICATE_ORDER.index, default="ok")
    return {
        "certificate": worst,
        "certificate_names": tuple(n for n, state in states.items() if state == worst),
    }


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
