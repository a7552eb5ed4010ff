"""SQLAlchemy models of the platform's state. Alembic migrations create the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from stackyard.statuses import BuildStatus, RunStatus, StepStatus

S = TypeVar("S", bound=StrEnum)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` that stores UTC and always gives back aware UTC values.

    SQLite keeps no offset: without this, values came back naive. PostgreSQL keeps it, and
    gets UTC too.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: store aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # stored as UTC by process_bind_param
        return value.astimezone(UTC)


class Status(TypeDecorator[S]):
    """A status enum stored as its plain string: the rows keep the text they always had,
    and reading one back gives the enum (an unknown value is an error, not a surprise)."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[S]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: S | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> S | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    pass


class Event(Base):
    """Something the platform did or saw, for the audit trail (start, stop, heal, ...)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
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
    # Triggers: the shared secret of webhooks (made on first request), and polling.
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The outside registry (``registries.name``) its images are pushed to; None: the
    # platform's own.
    registry_name: Mapped[str | None] = mapped_column("registry", String(63), nullable=True)
    poll_seconds: Mapped[int] = mapped_column(Integer, default=0)
    poll_last_seen: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Build(Base):
    """One run of the build spec (or the default build) for one commit."""

    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("stack_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    commit_sha: Mapped[str] = mapped_column(String(64), default="")
    requested_ref: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[BuildStatus] = mapped_column(Status(BuildStatus), default=BuildStatus.QUEUED)
    kind: Mapped[str] = mapped_column(String(16), default="")
    digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    exported: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    log_path: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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
    # promotion, chosen, rollback or variables (statuses.ReleaseOrigin); forced: a chosen
    # image released without having been released to the previous stage (--force).
    origin: Mapped[str] = mapped_column(String(16), default="promotion")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    log_path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutsideRegistry(Base):
    """A registry outside the platform that stacks may push to (``stackyard registries``).

    Its password is sealed by the SecretStore seam (``seal_platform``): never stored in
    clear, never shown again. ``auth`` is the scheme it asked for when it was checked.
    """

    __tablename__ = "registries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(255))  # [scheme://]host[:port][/namespace]
    username: Mapped[str] = mapped_column(String(255))
    password_sealed: Mapped[str] = mapped_column(Text)
    auth: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), default="")


class Target(Base):
    """A named place where stages run: an engine by endpoint, the registry it pulls from
    (an outside registry's name; None: the platform's own), a region and a router
    (empty: the platform's own). ``local``, the platform's own engine, registry and
    router, is built in and never stored."""

    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    engine: Mapped[str] = mapped_column(String(16))  # docker or swarm
    endpoint: Mapped[str] = mapped_column(String(255))
    registry_name: Mapped[str | None] = mapped_column("registry", String(63), nullable=True)
    region: Mapped[str] = mapped_column(String(63), default="")
    router: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), default="")


class StageRoute(Base):
    """Where a stage is served; the stage keeps its port across deployments."""

    __tablename__ = "stage_routes"
    __table_args__ = (UniqueConstraint("stack_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    tls: Mapped[str] = mapped_column(String(16), default="off", server_default="off")
    # Names `stackyard domains add` gave the stage: served beside those of stackyard.yml.
    added_domains: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # The certificate state last reported per name (ok, failed, expiring, expired), so a
    # `certificate` notification is sent once per change, across restarts (deploy/certwatch).
    certificate_notices: Mapped[dict[str, str]] = mapped_column(
        JSON, default=dict, server_default="{}"
    )

    @property
    def names(self) -> tuple[str, ...]:
        """Every host name the stage is served on (none for a port route), each once."""
        found = [self.host, *(self.aliases or ()), *(self.added_domains or ())]
        return tuple(dict.fromkeys(n for n in found if n))


class RetiredStage(Base):
    """A stage stackyard.yml no longer lists, stopped by ``stackyard stages remove``: not
    adopted at start, not one of the stack's stages; its releases stay as history."""

    __tablename__ = "retired_stages"
    __table_args__ = (UniqueConstraint("stack_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(63))
    retired_by: Mapped[str] = mapped_column(String(255))
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PipelineRun(Base):
    """Everything one commit sets off: build, then release, deployment and gate per stage."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (
        UniqueConstraint("stack_id", "number"),
        Index("ix_pipeline_runs_delivery", "stack_id", "delivery", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(255), default="")
    commit_sha: Mapped[str] = mapped_column(String(64), default="")
    before_sha: Mapped[str] = mapped_column(String(64), default="")
    source_url: Mapped[str] = mapped_column(Text, default="")
    trigger: Mapped[str] = mapped_column(String(64), default="")
    # Who pushed the commit or started the run ("" when unknown: polling), for four eyes.
    pushed_by: Mapped[str] = mapped_column(String(64), default="")
    # The git host's id of the webhook delivery that started the run (GitHub's
    # X-GitHub-Delivery): a delivery received again answers with this run. NULL otherwise.
    delivery: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[RunStatus] = mapped_column(Status(RunStatus), default=RunStatus.QUEUED)
    error: Mapped[str] = mapped_column(Text, default="")
    log_path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PipelineStep(Base):
    """One step of a run: build, or a stage's release, deployment or gate."""

    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(63), default="")
    status: Mapped[StepStatus] = mapped_column(Status(StepStatus), default=StepStatus.PENDING)
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    approved_by: Mapped[str] = mapped_column(String(64), default="")  # a gate's approver
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RecordCounter(Base):
    """The last number given to one kind of record of a stack (``stage`` "" when the records
    are numbered per stack): builds, pipeline runs, releases and deployments. See
    ``store.numbers``."""

    __tablename__ = "record_counters"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # the records' table
    stack_id: Mapped[int] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(63), primary_key=True, default="")
    last_number: Mapped[int] = mapped_column(Integer)


class Variable(Base):
    """A build or runtime variable set through the platform; ``stage`` "" means every stage."""

    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("stack_id", "kind", "stage", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # build | runtime
    stage: Mapped[str] = mapped_column(String(63), default="")
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Secret(Base):
    """A secret's current version; ``stage`` "" means every stage. Values: SecretVersion."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("stack_id", "stage", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63), default="")
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SecretVersion(Base):
    """Every value a secret had, encrypted, kept after unset so a rollback can restore it.

    Versions count per stack and name across stages, so (name, version) names one value.
    """

    __tablename__ = "secret_versions"
    __table_args__ = (UniqueConstraint("stack_id", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63), default="")
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Person(Base):
    """Someone who uses the platform, with a role: viewer, deployer or admin."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Token(Base):
    """An API token: its public id, its owner, its scope and the keyed hash of its secret.

    ``scope`` is ``role`` (the owner's role, whatever it is at each request) or an action
    on one stack (``read``, ``push``, ``deploy``). The token itself is never stored.
    """

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("people.id", ondelete="SET NULL"), nullable=True, index=True
    )
    owner: Mapped[str] = mapped_column(String(40))  # the owner's name, kept after removal
    label: Mapped[str] = mapped_column(String(255), default="")
    scope: Mapped[str] = mapped_column(String(16))
    stack_id: Mapped[int | None] = mapped_column(
        ForeignKey("stacks.id", ondelete="CASCADE"), nullable=True, index=True
    )
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(64), default="")
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StageProtection(Base):
    """Who may approve and who may deploy a protected stage. Kept on the platform only:
    nothing in a repository's stackyard.yml reads or changes it."""

    __tablename__ = "stage_protections"
    __table_args__ = (UniqueConstraint("stack_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(63))
    approvers: Mapped[list[str]] = mapped_column(JSON, default=list)
    deployers: Mapped[list[str]] = mapped_column(JSON, default=list)
    four_eyes: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64), default="")


class AuditEntry(Base):
    """One line of the append-only audit log: who did what, from where, with what result.

    ``stack`` is plain text, not a foreign key: the log outlives what it talks about. Rows
    are never updated (a trigger refuses it on SQLite); only the retention setting
    removes the oldest.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128), default="")
    token_id: Mapped[str] = mapped_column(String(16), default="")
    source: Mapped[str] = mapped_column(String(64), default="")
    via: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(64))
    stack: Mapped[str] = mapped_column(String(63), default="", index=True)
    target: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")


class NotificationChannel(Base):
    """Where a stack's notifications go: a Slack or Discord incoming webhook, a signed
    webhook, or an email address. ``sealed`` holds its secrets (the URL, the SMTP password,
    the signing secret) as one Fernet token; ``shown`` is the masked form the API lists."""

    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("stack_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    shown: Mapped[str] = mapped_column(Text, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sealed: Mapped[str] = mapped_column(Text, default="")
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationEvent(Base):
    """The outbox: one event a stack's channels hear of, written in (or right after) the
    transaction of the change that caused it. Its deliveries say who got it."""

    __tablename__ = "notification_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(63), default="")
    notice: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationDelivery(Base):
    """One event to one channel: PENDING until it is DELIVERED, or FAILED for good."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "channel_id"),
        Index("ix_notification_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("notification_events.id", ondelete="CASCADE"), index=True
    )
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NotificationAttempt(Base):
    """One try at a delivery, and its outcome (secrets masked)."""

    __tablename__ = "notification_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


class TrafficBucket(Base):
    """One minute of a stage's requests served by one release (0: before any deployment
    completed), counted from the router's access logs (deploy/trafficstore.py): per status
    class, and durations in log-scale bins (deploy/traffic.py), so that percentiles over
    any range come from summed bins."""

    __tablename__ = "traffic_buckets"
    __table_args__ = (
        UniqueConstraint("stack_id", "stage", "minute", "release"),
        Index("ix_traffic_buckets_minute", "minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack_id: Mapped[int] = mapped_column(ForeignKey("stacks.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(63))
    minute: Mapped[int] = mapped_column(Integer)  # unix time // 60
    release: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80), default="")
    requests: Mapped[int] = mapped_column(Integer, default=0)
    status_2xx: Mapped[int] = mapped_column(Integer, default=0)
    status_3xx: Mapped[int] = mapped_column(Integer, default=0)
    status_4xx: Mapped[int] = mapped_column(Integer, default=0)
    status_5xx: Mapped[int] = mapped_column(Integer, default=0)
    latency: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # bin -> requests


class AccessLogPosition(Base):
    """How far the traffic counter has read one of the router's access log files: written
    in the same transaction as the counts, so a restart neither loses nor repeats a line."""

    __tablename__ = "access_log_positions"
    __table_args__ = (UniqueConstraint("device", "inode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    device: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    head: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger)
