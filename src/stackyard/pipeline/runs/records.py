"""Pipeline run rows and their steps: the one place that reads and writes them.

A run is stored before anything starts, and every step's state is written as it
changes, so a restarted control plane finds each run where it was. The pipeline service
and the runner both go through ``RunRecords``; it also writes the notes of a run's log. A
gate that opens writes its ``approval`` notification in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.config.models import StackConfig
from stackyard.errors import AccessDenied, NotFoundError, UsageError
from stackyard.notify.events import approval_waiting
from stackyard.notify.outbox import Outbox
from stackyard.pipeline.runs.plan import NewerStep, StepKind, StepState
from stackyard.secrets.masking import SecretMasker
from stackyard.stacks.service import StackService
from stackyard.stacks.stages import known_stages, newest_build, require_stage
from stackyard.statuses import RUN_ACTIVE, RUN_STOPPED, RunStatus, StepStatus
from stackyard.store.models import Build, PipelineRun, PipelineStep, Stack
from stackyard.store.numbers import next_number


class StepView(BaseModel):
    position: int
    kind: StepKind
    stage: str
    status: StepStatus
    number: int | None  # the build, release or deployment number
    message: str
    approved_by: str = ""  # who passed a gate by approving it
    started_at: datetime | None
    finished_at: datetime | None


class RunView(BaseModel):
    stack: str
    number: int
    ref: str
    commit_sha: str
    trigger: str
    pushed_by: str = ""  # who pushed the commit or started the run ("" when unknown)
    status: RunStatus
    error: str
    log_path: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepView]


class RunGone(Exception):
    """The run's record is gone (its stack was deleted): its thread just stops."""


@dataclass(frozen=True)
class RunRecord:
    """A run as its runner reads it: the row, its steps, and the newer runs' progress."""

    id: int
    stack: str
    number: int
    status: RunStatus
    error: str
    ref: str
    commit_sha: str
    before_sha: str
    source_url: str
    log_path: str
    steps: tuple[StepState, ...]
    newer: tuple[NewerStep, ...]


REACHED = (StepStatus.RUNNING, StepStatus.SUCCEEDED, StepStatus.WAITING)
"""A gate or release step in one of these states: its run reached the stage."""


class RunRecords:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        logs_dir: Path,
        secret_values: Callable[[str], list[str]],
        outbox: Outbox | None = None,
    ) -> None:
        self._sessions = sessions
        self._logs_dir = logs_dir
        self._secret_values = secret_values
        self._outbox = outbox or Outbox()

    def topic(self, stack_name: str) -> Path:
        """The change signal of the stack's runs (see ``stackyard.changes``): whoever
        changes a run's state notifies it, and runs waiting at a gate wake on it."""
        return self._logs_dir / "runs" / stack_name

    # -- the API's side

    def create(
        self,
        stack_name: str,
        *,
        trigger: str,
        ref: str | None,
        commit: str | None,
        before: str | None,
        source_url: str | None,
        stages: list[StepState] | None,
        pushed_by: str = "",
        delivery: str | None = None,
    ) -> tuple[int, int]:
        """A QUEUED run (id, number); older QUEUED runs of the stack are SUPERSEDED.
        ``stages``: the steps of a promotion, which builds nothing. ``delivery``: the
        webhook delivery's id, unique per stack (IntegrityError for one seen before)."""
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            for older in session.scalars(
                select(PipelineRun).where(
                    PipelineRun.stack_id == stack.id, PipelineRun.status == RunStatus.QUEUED
                )
            ):
                older.status = RunStatus.SUPERSEDED
                older.error = "a newer run was started before this one began"
                older.finished_at = _now()
            number = next_number(session, PipelineRun, stack.id)
            run = PipelineRun(
                stack_id=stack.id,
                number=number,
                ref=ref or commit or stack.branch,
                commit_sha=commit or "",
                before_sha=before or "",
                source_url=source_url or "",
                trigger=trigger,
                pushed_by=pushed_by[:64],
                delivery=delivery[:255] if delivery else None,
                status=RunStatus.QUEUED,
                log_path=str(self._logs_dir / "runs" / stack_name / f"{number}.log"),
            )
            session.add(run)
            session.flush()
            build = StepStatus.SKIPPED if stages is not None else StepStatus.PENDING
            session.add(PipelineStep(run_id=run.id, position=0, kind=StepKind.BUILD, status=build))
            _add_steps(session, run.id, stages or [])
            return run.id, number

    def of_delivery(self, stack_name: str, delivery: str) -> int | None:
        """The number of the stack's run that the webhook delivery ``delivery`` started."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            found: int | None = session.scalar(
                select(PipelineRun.number).where(
                    PipelineRun.stack_id == stack.id, PipelineRun.delivery == delivery[:255]
                )
            )
            return found

    def promotion_stages(self, stack_name: str, to: str) -> list[str]:
        """The stack's stages in order; NotFoundError unless ``to`` is one of them."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            require_stage(session, stack, to)
            return known_stages(session, stack.id)

    def active(self) -> list[tuple[int, str]]:
        """(run id, stack) of every run a stopped platform left unfinished, oldest first."""
        with self._sessions() as session:
            return [
                (run_id, stack)
                for run_id, stack in session.execute(
                    select(PipelineRun.id, Stack.name)
                    .join(Stack, Stack.id == PipelineRun.stack_id)
                    .where(PipelineRun.status.in_(RUN_ACTIVE))
                    .order_by(PipelineRun.id)
                )
            ]

    def recent(self, stack_name: str, limit: int) -> list[RunView]:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            rows = session.scalars(
                select(PipelineRun)
                .where(PipelineRun.stack_id == stack.id)
                .order_by(PipelineRun.number.desc())
                .limit(limit)
            ).all()
            return [_view(session, row, stack_name) for row in rows]

    def get(self, stack_name: str, number: int) -> RunView:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            return _view(session, _row(session, stack, number), stack_name)

    def approve(
        self,
        stack_name: str,
        stage: str,
        *,
        by: str,
        check: Callable[[int, str], str | None] = lambda _run, _pushed_by: None,
    ) -> int:
        """Pass the gate where the newest run waits to enter ``stage``; that run's number.
        ``check`` (run number, who pushed it) says why ``by`` may not (four eyes)."""
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            waiting = session.execute(
                select(PipelineStep, PipelineRun)
                .join(PipelineRun, PipelineRun.id == PipelineStep.run_id)
                .where(
                    PipelineRun.stack_id == stack.id,
                    PipelineStep.kind == StepKind.GATE,
                    PipelineStep.stage == stage,
                    PipelineStep.status == StepStatus.WAITING,
                )
                .order_by(PipelineRun.number.desc())
            ).first()
            if waiting is None:
                require_stage(session, stack, stage)  # a mistyped stage says so, not this
                raise UsageError(
                    f"stage {stage} of {stack_name} is not waiting for an approval; "
                    f"{_doing(session, stack, stage)}",
                    hint=f"see `stackyard runs {stack_name}`",
                )
            step, run = waiting
            refusal = check(run.number, run.pushed_by)
            if refusal is not None:
                raise AccessDenied(
                    refusal,
                    permission=f"an approver other than the pusher of {stack_name}/{stage}",
                    hint="another approver must approve it",
                )
            step.status, step.message, step.finished_at = (
                StepStatus.SUCCEEDED,
                f"approved by {by}",
                _now(),
            )
            step.approved_by = by
            return run.number

    def cancel(self, stack_name: str, number: int, *, by: str) -> None:
        """Mark the run CANCELLED and its steps still to come CANCELLED."""
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            run = _row(session, stack, number)
            if run.status not in RUN_ACTIVE:
                raise UsageError(f"run {number} of {stack_name} already ended: {run.status}")
            run.status, run.error, run.finished_at = (
                RunStatus.CANCELLED,
                f"cancelled by {by}",
                _now(),
            )
            for step in _steps_in(session, run.id, (StepStatus.PENDING, StepStatus.WAITING)):
                step.status = StepStatus.CANCELLED

    # -- the runner's side

    def observe(self, run_id: int) -> RunRecord:
        """The run, its steps and what newer runs of the stack reached; RunGone without it."""
        with self._sessions() as session:
            found = session.execute(
                select(PipelineRun, Stack.name)
                .join(Stack, Stack.id == PipelineRun.stack_id)
                .where(PipelineRun.id == run_id)
            ).first()
            if found is None:
                raise RunGone(run_id)
            run, stack = found
            steps = session.scalars(
                select(PipelineStep)
                .where(PipelineStep.run_id == run_id)
                .order_by(PipelineStep.position)
            )
            newer = session.execute(
                select(PipelineRun.number, PipelineStep.stage, PipelineStep.kind)
                .join(PipelineStep, PipelineStep.run_id == PipelineRun.id)
                .where(
                    PipelineRun.stack_id == run.stack_id,
                    PipelineRun.number > run.number,
                    PipelineStep.kind.in_((StepKind.RELEASE, StepKind.GATE)),
                    PipelineStep.status.in_(REACHED),
                )
            )
            return RunRecord(
                id=run.id,
                stack=stack,
                number=run.number,
                status=run.status,
                error=run.error,
                ref=run.ref,
                commit_sha=run.commit_sha,
                before_sha=run.before_sha,
                source_url=run.source_url,
                log_path=run.log_path,
                steps=tuple(
                    StepState(s.position, StepKind(s.kind), s.stage, s.status, s.number, s.message)
                    for s in steps
                ),
                newer=tuple(NewerStep(n, stage, StepKind(kind)) for n, stage, kind in newer),
            )

    def config(self, stack_name: str, run_id: int) -> StackConfig:
        """stackyard.yml of the run's build; for a promotion, of the newest build."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            step = _step(session, run_id, 0)
            build = None
            if step is not None and step.number is not None:
                build = session.scalar(
                    select(Build).where(Build.stack_id == stack.id, Build.number == step.number)
                )
            build = build or newest_build(session, stack.id)
            config = build.config if build is not None else None
        return StackConfig.model_validate(config) if config else StackConfig()

    def add_steps(self, run_id: int, steps: list[StepState]) -> None:
        with self._sessions.begin() as session:
            _add_steps(session, run_id, steps)

    def set_run(self, run_id: int, **values: object) -> None:
        """Write the run's fields; a status never overwrites CANCELLED or SUPERSEDED."""
        with self._sessions.begin() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise RunGone(run_id)
            if run.status in RUN_STOPPED:
                values.pop("status", None)
            for key, value in values.items():
                setattr(run, key, value)

    def set_step(self, run_id: int, position: int, **values: object) -> None:
        with self._sessions.begin() as session:
            step = _step(session, run_id, position)
            if step is None:
                raise RunGone(run_id)
            for key, value in values.items():
                setattr(step, key, value)

    def open_gate(self, run_id: int, position: int) -> None:
        """The gate step and the run both WAITING, and its notification, in one write."""
        with self._sessions.begin() as session:
            step = _step(session, run_id, position)
            run = session.get(PipelineRun, run_id)
            if step is None or run is None:
                raise RunGone(run_id)
            step.status, step.started_at = StepStatus.WAITING, _now()
            if run.status not in RUN_STOPPED:
                run.status = RunStatus.WAITING
                stack = session.get(Stack, run.stack_id)
                if stack is not None:
                    notice = approval_waiting(stack.name, step.stage, run.number, run.commit_sha)
                    self._outbox.emit(session, notice)

    def end(self, run_id: int, status: RunStatus, reason: str) -> None:
        """The run's end: its status (CANCELLED or SUPERSEDED stay as they are), and every
        step still to come SKIPPED (the run succeeded or was skipped) or CANCELLED."""
        with self._sessions.begin() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise RunGone(run_id)
            if run.status in RUN_STOPPED and status not in RUN_STOPPED:
                status, reason = run.status, run.error
            run.status, run.error, run.finished_at = status, reason, _now()
            log_path = run.log_path
            fine = status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED)
            for step in _steps_in(session, run_id, (StepStatus.PENDING, StepStatus.WAITING)):
                step.status = StepStatus.SKIPPED if fine else StepStatus.CANCELLED
            # A step left RUNNING by a restart, and taken up by nothing since.
            for step in _steps_in(session, run_id, (StepStatus.RUNNING,)):
                step.status, step.finished_at = StepStatus.CANCELLED, _now()
        self.note(run_id, f"run {status}" + (f": {reason}" if reason else ""))
        changes.end(log_path)  # a follower of the run's log

    def note(self, run_id: int, text: str) -> None:
        """A line in the run's log, with the stack's secrets masked."""
        with self._sessions() as session:
            found = session.execute(
                select(PipelineRun.log_path, Stack.name)
                .join(Stack, Stack.id == PipelineRun.stack_id)
                .where(PipelineRun.id == run_id)
            ).first()
        if found is None:
            raise RunGone(run_id)
        log_path, stack = found
        with BuildLog(Path(log_path), SecretMasker(self._secret_values(stack)), None) as run_log:
            run_log.line("run", LineKind.MESSAGE, text)


def _add_steps(session: Session, run_id: int, steps: list[StepState]) -> None:
    for step in steps:
        session.add(
            PipelineStep(
                run_id=run_id,
                position=step.position,
                kind=step.kind,
                stage=step.stage,
                status=step.status,
                message=step.message,
            )
        )


def _step(session: Session, run_id: int, position: int) -> PipelineStep | None:
    return session.scalar(
        select(PipelineStep).where(PipelineStep.run_id == run_id, PipelineStep.position == position)
    )


def _steps_in(
    session: Session, run_id: int, statuses: tuple[StepStatus, ...]
) -> list[PipelineStep]:
    return list(
        session.scalars(
            select(PipelineStep).where(
                PipelineStep.run_id == run_id, PipelineStep.status.in_(statuses)
            )
        )
    )


def _row(session: Session, stack: Stack, number: int) -> PipelineRun:
    run = session.scalar(
        select(PipelineRun).where(PipelineRun.stack_id == stack.id, PipelineRun.number == number)
    )
    if run is None:
        raise NotFoundError(f"stack {stack.name} has no run {number}")
    return run


def _doing(session: Session, stack: Stack, stage: str) -> str:
    """What happens at ``stage`` instead of waiting for an approval."""
    busy = session.execute(
        select(PipelineStep, PipelineRun)
        .join(PipelineRun, PipelineRun.id == PipelineStep.run_id)
        .where(
            PipelineRun.stack_id == stack.id,
            PipelineStep.stage == stage,
            PipelineStep.status == StepStatus.RUNNING,
        )
    ).first()
    if busy is not None:
        step, run = busy
        verbs = {StepKind.RELEASE: "releasing", StepKind.DEPLOY: "deploying"}
        verb = verbs.get(StepKind(step.kind), "gating")
        return f"run {run.number} is {verb} it"
    return "no run is waiting at its gate"


def _view(session: Session, run: PipelineRun, stack_name: str) -> RunView:
    steps = session.scalars(
        select(PipelineStep).where(PipelineStep.run_id == run.id).order_by(PipelineStep.position)
    )
    return RunView(
        stack=stack_name,
        number=run.number,
        ref=run.ref,
        commit_sha=run.commit_sha,
        trigger=run.trigger,
        pushed_by=run.pushed_by,
        status=run.status,
        error=run.error,
        log_path=run.log_path,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        steps=[
            StepView(
                position=s.position,
                kind=StepKind(s.kind),
                stage=s.stage,
                status=s.status,
                number=s.number,
                message=s.message,
                approved_by=s.approved_by,
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in steps
        ],
    )


def _now() -> datetime:
    return datetime.now(UTC)
