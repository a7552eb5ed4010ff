"""Build rows: numbered per stack, QUEUED, then RUNNING, then SUCCEEDED or FAILED.

``BuildRecords`` is the one place that reads and writes them; the build service and the
build runner both go through it. A FAILED build's notification is written with its end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from stackyard.errors import NotFoundError
from stackyard.notify.events import build_failed
from stackyard.notify.outbox import Outbox
from stackyard.stacks.service import StackService
from stackyard.statuses import BuildStatus
from stackyard.store.models import Build
from stackyard.store.numbers import next_number

INTERRUPTED = "interrupted: the platform stopped before this build finished; start a new build"


class BuildView(BaseModel):
    """A build as the API and CLI show it."""

    model_config = ConfigDict(from_attributes=True)

    stack: str = ""
    number: int
    commit_sha: str
    requested_ref: str
    status: BuildStatus
    kind: str
    digest: str | None
    exported: dict[str, str]
    log_path: str
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _view(build: Build, stack: str) -> BuildView:
    view = BuildView.model_validate(build)
    view.stack = stack
    return view


class BuildRecords:
    def __init__(
        self, sessions: sessionmaker[Session], logs_dir: Path, outbox: Outbox | None = None
    ) -> None:
        self._sessions = sessions
        self._logs_dir = logs_dir
        self._outbox = outbox or Outbox()

    def list(self, stack_name: str) -> list[BuildView]:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            rows = session.scalars(
                select(Build).where(Build.stack_id == stack.id).order_by(Build.number.desc())
            )
            return [_view(row, stack_name) for row in rows]

    def get(self, stack_name: str, number: int) -> BuildView:
        with self._sessions() as session:
            return _view(self._row(session, stack_name, number), stack_name)

    def create(self, stack_name: str, ref: str | None) -> BuildView:
        """A QUEUED build of ``ref`` (default: the stack's branch), with the next number."""
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            number = next_number(session, Build, stack.id)
            build = Build(
                stack_id=stack.id,
                number=number,
                requested_ref=ref or stack.branch,
                status=BuildStatus.QUEUED,
                exported={},
                log_path=str(self._logs_dir / "builds" / stack_name / f"{number}.log"),
            )
            session.add(build)
            session.flush()
            return _view(build, stack_name)

    def start(self, stack_name: str, number: int) -> BuildView:
        """The build leaves the queue: RUNNING from now."""
        with self._sessions.begin() as session:
            build = self._row(session, stack_name, number)
            build.status = BuildStatus.RUNNING
            build.started_at = datetime.now(UTC)
            return _view(build, stack_name)

    def record(self, stack_name: str, number: int, **values: object) -> None:
        with self._sessions.begin() as session:
            build = self._row(session, stack_name, number)
            for key, value in values.items():
                setattr(build, key, value)

    def finish(
        self,
        stack_name: str,
        number: int,
        status: BuildStatus,
        *,
        error: str = "",
        digest: str | None = None,
        exported: dict[str, str] | None = None,
    ) -> None:
        values: dict[str, object] = {
            "status": status,
            "error": error,
            "finished_at": datetime.now(UTC),
        }
        if digest is not None:
            values.update(digest=digest, exported=exported or {})
        with self._sessions.begin() as session:
            build = self._row(session, stack_name, number)
            for key, value in values.items():
                setattr(build, key, value)
            if status is BuildStatus.FAILED:
                notice = build_failed(stack_name, number, build.commit_sha, error)
                self._outbox.emit(session, notice)

    def fail_interrupted(self) -> int:
        """At start: builds left QUEUED or RUNNING by a stopped platform become FAILED."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(Build)
                .where(Build.status.in_((BuildStatus.QUEUED, BuildStatus.RUNNING)))
                .values(
                    status=BuildStatus.FAILED,
                    error=INTERRUPTED,
                    finished_at=datetime.now(UTC),
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def _row(self, session: Session, stack_name: str, number: int) -> Build:
        stack = StackService.row(session, stack_name)
        build = session.scalar(
            select(Build).where(Build.stack_id == stack.id, Build.number == number)
        )
        if build is None:
            last = session.scalar(select(func.max(Build.number)).where(Build.stack_id == stack.id))
            known = f"builds 1 to {last}" if last else "no builds yet"
            raise NotFoundError(f"stack {stack_name} has no build {number} ({known})")
        return build
