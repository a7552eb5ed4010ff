"""A stack's stages as the store knows them: the one lookup behind every ``--stage``.

Releases and deployments call ``require_stage``, so an unknown stage is an error that
names the valid ones instead of an empty answer; the console's overview asks
``known_stages_of`` for many stacks at once, with the same rule.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from stackyard.config.models import default_stages
from stackyard.errors import NotFoundError
from stackyard.store.models import Build, Release, RetiredStage, Stack


def stage_names(config: dict[str, Any] | None) -> list[str]:
    """The stages of a build's recorded stackyard.yml, in order (the defaults without one)."""
    if not config:
        return [stage.name for stage in default_stages()]
    return [str(stage["name"]) for stage in config.get("stages", [])]


def newest_build(session: Session, stack_id: int) -> Build | None:
    """The newest successful build: its stackyard.yml says which stages the stack has."""
    return session.scalar(
        select(Build)
        .where(Build.stack_id == stack_id, Build.status == "SUCCEEDED")
        .order_by(Build.number.desc())
    )


def known_stages(session: Session, stack_id: int) -> list[str]:
    """The stages in stackyard.yml at the newest successful build, in order, then any other
    stage that has releases (one removed from stackyard.yml may still run tasks) unless
    ``stackyard stages remove`` retired it."""
    return known_stages_of(session, [stack_id]).get(stack_id, [])


def known_stages_of(session: Session, stack_ids: list[int]) -> dict[int, list[str]]:
    """``known_stages`` of each stack, in three queries for all of them (the console's
    overview shows every stack at once); a stack with no stage is left out."""
    newest = (
        select(Build.stack_id, func.max(Build.number).label("number"))
        .where(Build.status == "SUCCEEDED", Build.stack_id.in_(stack_ids))
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
        .where(Release.stack_id.in_(stack_ids))
        .group_by(Release.stack_id, Release.stage)
        .order_by(func.min(Release.id))
    )
    retired = retired_stages_of(session, stack_ids)
    for stack_id, stage in released:
        if stage in names.get(stack_id, ()) or stage in retired.get(stack_id, ()):
            continue
        names.setdefault(stack_id, []).append(stage)
    return names


def retired_stages_of(session: Session, stack_ids: list[int]) -> dict[int, set[str]]:
    """The stages ``stackyard stages remove`` stopped, per stack (``RetiredStage``)."""
    found: dict[int, set[str]] = {}
    rows = session.execute(
        select(RetiredStage.stack_id, RetiredStage.stage).where(
            RetiredStage.stack_id.in_(stack_ids)
        )
    )
    for stack_id, stage in rows:
        found.setdefault(stack_id, set()).add(stage)
    return found


def require_stage(session: Session, stack: Stack, stage: str) -> None:
    """Raise NotFoundError naming the valid stages unless ``stage`` is one of ``stack``'s."""
    names = known_stages(session, stack.id)
    if stage in names:
        return
    if not names:
        raise NotFoundError(
            f"stack {stack.name} has no stage '{stage}': it has no successful build yet",
            hint=f"build it first: stackyard build {stack.name}",
        )
    raise NotFoundError(
        f"stack {stack.name} has no stage '{stage}' (stages: {', '.join(names)})",
        hint="stages come from stackyard.yml at the newest successful build",
    )
