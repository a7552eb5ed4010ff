"""Stacks: create, read, update and delete the apps the platform builds and deploys.

Called by the API; every other service (pipeline, deploy, the console's read model) looks a
stack up by name through ``StackService.row``.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from pathlib import PurePosixPath

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from stackyard.config.repos import URL_FORM
from stackyard.errors import NotFoundError, UsageError
from stackyard.store.models import OutsideRegistry, Release, Stack

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MIN_POLL_SECONDS = 10
MAX_POLL_SECONDS = 86400


class StackView(BaseModel):
    """A stack as the API and CLI show it."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    repo: str
    branch: str
    context_dir: str
    dockerfile: str
    poll_seconds: int = 0
    # An outside registry's name; None: the platform's own.
    registry: str | None = Field(default=None, validation_alias=AliasChoices("registry_name"))
    created_at: datetime
    updated_at: datetime


class StackChanges(BaseModel):
    """Fields a user may set at creation or change later; ``None`` keeps the current value."""

    repo: str | None = None
    branch: str | None = None
    context_dir: str | None = None
    dockerfile: str | None = None
    poll_seconds: int | None = None
    registry: str | None = None  # an outside registry's name, or "local" for the platform's


def validate_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(
            f"stack name '{name}' is not valid",
            hint="use lowercase letters, digits and '-', starting with a letter or digit "
            "(at most 63 characters), e.g. 'hello' or 'billing-api'",
        )
    return name


def validate_repo(repo: str) -> str:
    """A git URL, or an absolute local path (the CLI makes relative paths absolute)."""
    repo = repo.strip()
    if URL_FORM.match(repo) or repo.startswith("/"):
        return repo
    raise UsageError(
        f"repo '{repo}' is neither a git URL nor an absolute path",
        hint="give a URL such as https://host/org/app.git, or a path to a local repository",
    )


def validate_relative(value: str, field: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise UsageError(f"{field} '{value}' must be a path inside the repository")
    return value


def _apply(stack: Stack, changes: StackChanges, session: Session) -> None:
    if changes.repo is not None:
        stack.repo = validate_repo(changes.repo)
    if changes.branch is not None:
        if not changes.branch.strip() or changes.branch.startswith("-"):
            raise UsageError(f"branch '{changes.branch}' is not a valid branch name")
        stack.branch = changes.branch
    if changes.context_dir is not None:
        stack.context_dir = validate_relative(changes.context_dir, "context")
    if changes.dockerfile is not None:
        stack.dockerfile = validate_relative(changes.dockerfile, "dockerfile")
    if changes.poll_seconds is not None:
        stack.poll_seconds = validate_poll_seconds(changes.poll_seconds)
    if changes.registry is not None:
        stack.registry_name = _registry(session, stack, changes.registry)


def _registry(session: Session, stack: Stack, name: str) -> str | None:
    """The outside registry ``name`` (None for ``local``), once it is known to exist and the
    stack has no release yet: released images stay where they are, and a task replaced
    later pulls from the stack's registry, so a stack changes registry before releasing."""
    wanted = None if name == "local" else name
    if wanted == stack.registry_name:
        return wanted
    if wanted is not None and (
        session.scalar(select(OutsideRegistry.id).where(OutsideRegistry.name == wanted)) is None
    ):
        known = session.scalars(select(OutsideRegistry.name).order_by(OutsideRegistry.name))
        listed = ", ".join(known) or "none yet"
        raise UsageError(
            f"no registry named '{name}' (registries: {listed}; 'local' is the platform's own)",
            hint="add it first: stackyard registries add NAME --url URL --username U "
            "--password-stdin",
        )
    if stack.id is not None and session.scalar(
        select(Release.id).where(Release.stack_id == stack.id).limit(1)
    ):
        raise UsageError(
            f"stack {stack.name} has releases in registry {stack.registry_name or 'local'}: its "
            "registry can only change before its first release",
            hint="create a new stack with --registry, or keep this one's registry",
        )
    return wanted


def validate_poll_seconds(seconds: int) -> int:
    """0 turns polling off; otherwise at least MIN_POLL_SECONDS, at most a day."""
    if seconds == 0 or MIN_POLL_SECONDS <= seconds <= MAX_POLL_SECONDS:
        return seconds
    raise UsageError(
        f"poll interval {seconds} s is out of range",
        hint=f"give 0 (off) or {MIN_POLL_SECONDS} to {MAX_POLL_SECONDS} seconds",
    )


class StackService:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def create(self, name: str, changes: StackChanges) -> StackView:
        validate_name(name)
        if changes.repo is None:
            raise UsageError("a stack needs a repo", hint="pass --repo PATH_OR_URL")
        stack = Stack(name=name, branch="main", context_dir=".", dockerfile="Dockerfile")
        with self._sessions.begin() as session:
            _apply(stack, changes, session)
            session.add(stack)
            try:
                session.flush()
            except IntegrityError as exc:
                raise UsageError(
                    f"a stack named '{name}' already exists",
                    hint=f"pick another name, or change it with `stackyard stacks update {name}`",
                ) from exc
            return StackView.model_validate(stack)

    def list(self) -> list[StackView]:
        with self._sessions() as session:
            rows = session.scalars(select(Stack).order_by(Stack.name))
            return [StackView.model_validate(row) for row in rows]

    def get(self, name: str) -> StackView:
        with self._sessions() as session:
            return StackView.model_validate(self.row(session, name))

    def update(self, name: str, changes: StackChanges) -> StackView:
        with self._sessions.begin() as session:
            stack = self.row(session, name)
            _apply(stack, changes, session)
            session.flush()
            return StackView.model_validate(stack)

    def webhook_secret(self, name: str) -> str:
        """The stack's webhook secret, made (random, 32 bytes of hex) on first request."""
        with self._sessions.begin() as session:
            stack = self.row(session, name)
            if not stack.webhook_secret:
                stack.webhook_secret = secrets.token_hex(32)
            return stack.webhook_secret

    def rotate_webhook_secret(self, name: str) -> str:
        """A new webhook secret for the stack; deliveries signed with the old one fail."""
        with self._sessions.begin() as session:
            stack = self.row(session, name)
            stack.webhook_secret = secrets.token_hex(32)
            return stack.webhook_secret

    def delete(self, name: str) -> None:
        with self._sessions.begin() as session:
            session.delete(self.row(session, name))

    @staticmethod
    def row(session: Session, name: str) -> Stack:
        stack = session.scalar(select(Stack).where(Stack.name == name))
        if stack is None:
            names = session.scalars(select(Stack.name).order_by(Stack.name)).all()
            known = ", ".join(names) if names else "none yet"
            raise NotFoundError(
                f"no stack named '{name}' (stacks: {known})",
                hint="create it with `stackyard stacks create NAME --repo PATH_OR_URL`",
            )
        return stack
