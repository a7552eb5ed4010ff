"""A stack's stages as the store knows them: the one lookup behind every ``--stage``.

Releases and deployments call ``require_stage``, so an unknown stage is an error that
names the valid ones instead of an empty answer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stackyard.config.models import default_stages
from stackyard.errors import NotFoundError
from stackyard.store.models import Build, Release, Stack


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
    stage that has releases (one removed from stackyard.yml may still run tasks)."""
    newest = newest_build(session, stack_id)
    names = stage_names(newest.config) if newest is not None else []
    released = session.scalars(
        select(Release.stage)
        .where(Release.stack_id == stack_id)
        .group_by(Release.stage)
        .order_by(func.min(Release.id))
    )
    return names + [stage for stage in released if stage not in names]


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
