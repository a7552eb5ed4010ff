"""SQLAlchemy models of the platform's state. Alembic migrations create the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Event(Base):
    """Something the platform did or saw, for the audit trail (start, stop, heal, ...)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255), default="")
    message: Mapped[str] = mapped_column(Text, default="")


class Stack(Base):
    """One deployable app bound to a git source."""

    __tablename__ = "stacks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    repo: Mapped[str] = mapped_column(Text)
    branch: Mapped[str] = mapped_column(String(255), default="main")
    context_dir: Mapped[str] = mapped_column(Text, default=".")
    dockerfile: Mapped[str] = mapped_column(Text, default="Dockerfile")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Build(Base):
    """One run of the build spec (or the default build) for one commit."""

    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("stack_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    commit_sha: Mapped[str] = mapped_column(String(64), default="")
    requested_ref: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="QUEUED")
    kind: Mapped[str] = mapped_column(String(16), default="")
    digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    exported: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    log_path: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Release(Base):
    """A numbered, immutable record: stage S runs digest D with config snapshot C."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("stack_id", "stage", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63))
    number: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    commit_sha: Mapped[str] = mapped_column(String(64), default="")
    build_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(255), default="")
    log_path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StageRoute(Base):
    """Where a stage is served; the stage keeps its port across deployments."""

    __tablename__ = "stage_routes"
    __table_args__ = (UniqueConstraint("stack_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Deployment(Base):
    """Making a stage's tasks match one release: IN_PROGRESS, then COMPLETED or FAILED."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("stack_id", "stage", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63))
    number: Mapped[int] = mapped_column(Integer)
    release_number: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16), default="QUEUED")
    reason: Mapped[str] = mapped_column(Text, default="")
    trigger: Mapped[str] = mapped_column(String(64), default="")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    tasks_started: Mapped[int] = mapped_column(Integer, default=0)
    tasks_healthy: Mapped[int] = mapped_column(Integer, default=0)
    tasks_routed: Mapped[int] = mapped_column(Integer, default=0)
    tasks_stopped: Mapped[int] = mapped_column(Integer, default=0)
    desired: Mapped[int] = mapped_column(Integer, default=1)
    log_path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
