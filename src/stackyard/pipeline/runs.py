"""Pipeline runs: build once, then gate, release and deploy each stage in order.

A run is stored before anything starts, so a killed control plane finds it again and
carries on. Triggers (git push, webhooks, polling, variable changes, the CLI) all call
``PipelineService.start_run``. Runs of one stack build one at a time; each stage takes
one run at a time; a newer run supersedes an older one that has not reached the stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.buildspec.buildlog import BuildLog, LineKind
from stackyard.config.models import StackConfig
from stackyard.deploy.records import TERMINAL as DEPLOYMENT_DONE
from stackyard.deploy.service import DeployService
from stackyard.errors import NotFoundError, StackyardError, UsageError
from stackyard.pipeline.builds import TERMINAL as BUILD_DONE
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.releases import ReleaseService
from stackyard.secrets.masking import SecretMasker
from stackyard.source.base import Source, matches_paths
from stackyard.stacks.service import StackService
from stackyard.stacks.stages import known_stages, newest_build, require_stage
from stackyard.store.models import Build, PipelineRun, PipelineStep, Stack
from stackyard.store.numbers import next_number

log = logging.getLogger(__name__)

ACTIVE = ("QUEUED", "RUNNING", "WAITING")
TERMINAL = ("SUCCEEDED", "FAILED", "SUPERSEDED", "CANCELLED", "SKIPPED")
POLL = 0.1


class StepView(BaseModel):
    position: int
    kind: str  # build | gate | release | deploy
    stage: str
    status: str  # PENDING RUNNING WAITING SUCCEEDED FAILED SKIPPED CANCELLED
    number: int | None  # the build, release or deployment number
    message: str
    started_at: datetime | None
    finished_at: datetime | None


class RunView(BaseModel):
    stack: str
    number: int
    ref: str
    commit_sha: str
    trigger: str
    status: str  # QUEUED RUNNING WAITING SUCCEEDED FAILED SUPERSEDED CANCELLED SKIPPED
    error: str
    log_path: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepView]


class _Stop(Exception):
    """The run ends here (cancelled, superseded, skipped), with this status and reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _StepFailed(Exception):
    """A step failed; the run is FAILED and names it."""


class PipelineService:
    """Starts and drives pipeline runs, each on its own thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        builds: BuildService,
        releases: ReleaseService,
        deploy: DeployService,
        source: Source,
        *,
        logs_dir: Path,
        secret_values: Callable[[str], list[str]] | None = None,
    ) -> None:
        self._sessions = sessions
        self._builds = builds
        self._releases = releases
        self._deploy = deploy
        self._source = source
        self._logs_dir = logs_dir
        self._secret_values = secret_values or (lambda _stack: [])
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._stopping = threading.Event()

    # -- starting

    def start_run(
        self,
        stack_name: str,
        *,
        trigger: str,
        ref: str | None = None,
        commit: str | None = None,
        before: str | None = None,
        source_url: str | None = None,
        changed_paths: list[str] | None = None,
        stages: list[str] | None = None,
    ) -> RunView:
        """Record a run (QUEUED) and start it.

        ``ref``/``commit``: what to build (default: the stack's branch head). ``before``:
        the previous sha of the pushed branch, for path filters. ``source_url``: where to
        fetch the commit from when it is not the stack's repo (the platform's own git
        remote). ``changed_paths``: when the trigger already knows them (webhooks). A run
        whose changes miss the stack's ``build.paths`` filter is recorded as SKIPPED.
        """
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            for older in session.scalars(
                select(PipelineRun).where(
                    PipelineRun.stack_id == stack.id, PipelineRun.status == "QUEUED"
                )
            ):
                older.status = "SUPERSEDED"
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
                status="QUEUED",
                log_path=str(self._logs_dir / "runs" / stack_name / f"{number}.log"),
            )
            session.add(run)
            session.flush()
            # A promotion builds nothing: it runs only the given stages.
            build_status = "SKIPPED" if stages is not None else "PENDING"
            session.add(PipelineStep(run_id=run.id, position=0, kind="build", status=build_status))
            run_id = run.id
        self._launch(stack_name, run_id, changed_paths=changed_paths, stages=stages)
        return self.get(stack_name, number)

    def promote(self, stack_name: str, to: str, from_stage: str | None = None) -> RunView:
        """A run that releases and deploys ``to`` with what the previous stage runs."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            require_stage(session, stack, to)
            names = known_stages(session, stack.id)
        index = names.index(to)
        expected = names[index - 1] if index else "latest"
        if from_stage is not None and from_stage != expected:
            raise UsageError(
                f"{to} promotes from {expected}, not {from_stage}",
                hint=f"stages run in the order {' -> '.join(names)}",
            )
        return self.start_run(stack_name, trigger=f"promote {expected} -> {to}", stages=[to])

    def _launch(
        self,
        stack_name: str,
        run_id: int,
        *,
        changed_paths: list[str] | None = None,
        stages: list[str] | None = None,
    ) -> None:
        thread = threading.Thread(
            target=self._execute,
            args=(stack_name, run_id, changed_paths, stages),
            name=f"run-{stack_name}-{run_id}",
            daemon=True,
        )
        with self._guard:
            self._threads[run_id] = thread
        thread.start()

    def resume_interrupted(self) -> int:
        """At start: carry on with every run a stopped platform left unfinished."""
        with self._sessions.begin() as session:
            rows = session.execute(
                select(PipelineRun.id, Stack.name)
                .join(Stack, Stack.id == PipelineRun.stack_id)
                .where(PipelineRun.status.in_(ACTIVE))
                .order_by(PipelineRun.id)
            ).all()
        for run_id, stack_name in rows:
            self._note(run_id, "the platform stopped during this run (INTERRUPTED); resuming")
            self._launch(stack_name, run_id)
        return len(rows)

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._guard:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout=timeout)

    # -- reading and acting

    def recent(self, stack_name: str, limit: int = 20) -> list[RunView]:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            rows = session.scalars(
                select(PipelineRun)
                .where(PipelineRun.stack_id == stack.id)
                .order_by(PipelineRun.number.desc())
                .limit(limit)
            ).all()
            return [self._view(session, row, stack_name) for row in rows]

    def get(self, stack_name: str, number: int) -> RunView:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            return self._view(session, self._row(session, stack, number), stack_name)

    def approve(self, stack_name: str, stage: str, *, by: str = "admin") -> RunView:
        """Pass the approval gate where a run waits to enter ``stage``."""
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            waiting = session.execute(
                select(PipelineStep, PipelineRun)
                .join(PipelineRun, PipelineRun.id == PipelineStep.run_id)
                .where(
                    PipelineRun.stack_id == stack.id,
                    PipelineStep.kind == "gate",
                    PipelineStep.stage == stage,
                    PipelineStep.status == "WAITING",
                )
                .order_by(PipelineRun.number.desc())
            ).first()
            if waiting is None:
                raise UsageError(
                    f"stage {stage} of {stack_name} is not waiting for an approval; "
                    f"{self._doing(session, stack, stage)}",
                    hint=f"see `stackyard runs {stack_name}`",
                )
            step, run = waiting
            step.status, step.message, step.finished_at = "SUCCEEDED", f"approved by {by}", _now()
            number = run.number
        return self.get(stack_name, number)

    def cancel(self, stack_name: str, number: int) -> RunView:
        """Stop a run between steps; a build or deployment already running finishes."""
        with self._sessions.begin() as session:
            stack = StackService.row(session, stack_name)
            run = self._row(session, stack, number)
            if run.status not in ACTIVE:
                raise UsageError(f"run {number} of {stack_name} already ended: {run.status}")
            run.status, run.error, run.finished_at = "CANCELLED", "cancelled by admin", _now()
            for step in session.scalars(
                select(PipelineStep).where(
                    PipelineStep.run_id == run.id,
                    PipelineStep.status.in_(("PENDING", "WAITING")),
                )
            ):
                step.status = "CANCELLED"
        return self.get(stack_name, number)

    def _doing(self, session: Session, stack: Stack, stage: str) -> str:
        busy = session.execute(
            select(PipelineStep, PipelineRun)
            .join(PipelineRun, PipelineRun.id == PipelineStep.run_id)
            .where(
                PipelineRun.stack_id == stack.id,
                PipelineStep.stage == stage,
                PipelineStep.status == "RUNNING",
            )
        ).first()
        if busy is not None:
            step, run = busy
            verb = {"release": "releasing", "deploy": "deploying", "gate": "gating"}[step.kind]
            return f"run {run.number} is {verb} it"
        return "no run is waiting at its gate"

    # -- the run itself

    def _execute(
        self,
        stack_name: str,
        run_id: int,
        changed_paths: list[str] | None,
        stages: list[str] | None,
    ) -> None:
        try:
            self._drive(stack_name, run_id, changed_paths, stages)
        except _Stop as stop:
            self._end(run_id, stop.status, stop.reason)
        except _StepFailed as failed:
            self._end(run_id, "FAILED", str(failed))
        except StackyardError as exc:
            self._end(run_id, "FAILED", exc.message)
        except Exception as exc:  # a bug still ends the run, with its cause in the log
            log.exception("run %s of %s failed", run_id, stack_name)
            self._end(run_id, "FAILED", f"internal error: {exc!r}")
        finally:
            with self._guard:
                self._threads.pop(run_id, None)

    def _drive(
        self,
        stack_name: str,
        run_id: int,
        changed_paths: list[str] | None,
        stages: list[str] | None,
    ) -> None:
        build_step = self._step(run_id, 0)
        if build_step.status != "SKIPPED":
            with self._lock(stack_name, ""):  # one run of a stack builds at a time
                self._check_alive(run_id)
                self._set_run(run_id, status="RUNNING", started_at=_now())
                if build_step.status != "SUCCEEDED":
                    self._filter(stack_name, run_id, changed_paths)
                    self._build(stack_name, run_id)
        else:
            self._set_run(run_id, status="RUNNING", started_at=_now())
        plan = stages or [stage.name for stage in self._config(stack_name, run_id).stages]
        self._add_stage_steps(stack_name, run_id, plan, manual=stages is not None)
        for stage in plan:
            self._stage(stack_name, run_id, stage, promotion=stages is not None)
        self._end(run_id, "SUCCEEDED", "")

    def _filter(self, stack_name: str, run_id: int, changed: list[str] | None) -> None:
        """Monorepo path filter: skip the run when no change touches ``build.paths``."""
        run = self._run(run_id)
        stack = self._stack(stack_name)
        url = run.source_url or stack.repo
        commit = self._source.resolve(stack_name, url, run.commit_sha or None, stack.branch)
        self._set_run(run_id, commit_sha=commit.sha)
        raw = self._source.read_file(stack_name, commit.sha, "stackyard.yml")
        if raw is None:
            return
        try:
            paths = ((yaml.safe_load(raw) or {}).get("build") or {}).get("paths")
        except (ValueError, AttributeError, yaml.YAMLError):
            return  # the build reports a bad stackyard.yml properly
        if not paths:
            return
        if changed is None:
            changed = self._source.changed_paths(stack_name, run.before_sha or None, commit.sha)
        if not matches_paths(changed, paths):
            raise _Stop(
                "SKIPPED",
                f"no change touches build.paths ({', '.join(paths)}); "
                f"changed: {', '.join(changed[:10]) or 'nothing'}",
            )

    def _build(self, stack_name: str, run_id: int) -> None:
        run = self._run(run_id)
        step = self._step(run_id, 0)
        if step.status == "RUNNING" and step.number is not None:
            self._note(run_id, f"build {step.number} was interrupted; building again")
        build = self._builds.start(
            stack_name, run.commit_sha or run.ref or None, source_url=run.source_url or None
        )
        self._set_step(run_id, 0, status="RUNNING", number=build.number, started_at=_now())
        self._note(run_id, f"build {build.number} started")
        while True:
            build = self._builds.get(stack_name, build.number)
            if build.status in BUILD_DONE:
                break
            changes.wait_end(build.log_path, POLL)  # the build's end wakes this at once
        if build.status != "SUCCEEDED":
            self._set_step(run_id, 0, status="FAILED", message=build.error, finished_at=_now())
            raise _StepFailed(f"build {build.number} failed: {build.error}")
        self._set_run(run_id, commit_sha=build.commit_sha)
        self._set_step(
            run_id, 0, status="SUCCEEDED", message=build.digest or "", finished_at=_now()
        )
        self._note(run_id, f"build {build.number} produced {build.digest}")

    def _config(self, stack_name: str, run_id: int) -> StackConfig:
        """stackyard.yml of the run's build; for a promotion, of the newest build."""
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            step = session.scalar(
                select(PipelineStep).where(
                    PipelineStep.run_id == run_id, PipelineStep.position == 0
                )
            )
            build = None
            if step is not None and step.number is not None:
                build = session.scalar(
                    select(Build).where(Build.stack_id == stack.id, Build.number == step.number)
                )
            build = build or newest_build(session, stack.id)
            config = build.config if build is not None else None
        return StackConfig.model_validate(config) if config else StackConfig()

    def _add_stage_steps(
        self, stack_name: str, run_id: int, stages: list[str], *, manual: bool
    ) -> None:
        """Gate, release and deploy steps per stage; a promotion by hand is its own approval."""
        promotions = {s.name: s.promotion for s in self._config(stack_name, run_id).stages}
        with self._sessions.begin() as session:
            existing = session.scalar(
                select(func.count()).select_from(PipelineStep).where(PipelineStep.run_id == run_id)
            )
            if existing and existing > 1:
                return  # resumed: the steps are already there
            position = 1
            for stage in stages:
                gate = "approval" if promotions.get(stage) == "approval" else "auto"
                gate = "promoted by hand" if manual else gate
                for kind in ("gate", "release", "deploy"):
                    message = gate if kind == "gate" else ""
                    session.add(
                        PipelineStep(
                            run_id=run_id,
                            position=position,
                            kind=kind,
                            stage=stage,
                            message=message,
                        )
                    )
                    position += 1

    def _stage(self, stack_name: str, run_id: int, stage: str, *, promotion: bool) -> None:
        gate, release_step, deploy_step = self._stage_steps(run_id, stage)
        self._gate(stack_name, run_id, gate)
        with self._lock(stack_name, stage):
            self._check_alive(run_id)
            self._check_newest(stack_name, run_id, stage)
            release_number = self._release(stack_name, run_id, release_step, promotion=promotion)
            self._deploy_stage(stack_name, run_id, deploy_step, release_number)

    def _gate(self, stack_name: str, run_id: int, step: PipelineStep) -> None:
        if step.status in ("SUCCEEDED", "SKIPPED"):
            return
        if step.message != "approval":
            now = _now()
            self._set_step(
                run_id, step.position, status="SUCCEEDED", started_at=now, finished_at=now
            )
            return
        self._set_step(run_id, step.position, status="WAITING", started_at=_now())
        self._set_run(run_id, status="WAITING")
        self._note(
            run_id,
            f"waiting for an approval to enter {step.stage}: "
            f"stackyard approve {stack_name} --stage {step.stage}",
        )
        while not self._stopping.is_set():
            current = self._step(run_id, step.position)
            if current.status == "SUCCEEDED":
                self._note(run_id, f"{step.stage} approved ({current.message})")
                self._set_run(run_id, status="RUNNING")
                return
            self._check_alive(run_id)
            self._check_newest(stack_name, run_id, step.stage)
            time.sleep(POLL)
        raise _Stop("INTERRUPTED", "the platform is stopping")

    def _release(self, stack_name: str, run_id: int, step: PipelineStep, *, promotion: bool) -> int:
        if step.status == "SUCCEEDED" and step.number is not None:
            return step.number
        self._set_step(run_id, step.position, status="RUNNING", started_at=_now())
        digest = None if promotion else self._step(run_id, 0).message or None
        try:
            release = self._releases.release(
                stack_name, step.stage, created_by=f"run {self._run(run_id).number}", digest=digest
            )
        except StackyardError as exc:
            self._set_step(
                run_id, step.position, status="FAILED", message=exc.message, finished_at=_now()
            )
            raise _StepFailed(f"release of {step.stage} failed: {exc.message}") from exc
        self._set_step(
            run_id,
            step.position,
            status="SUCCEEDED",
            number=release.number,
            message=release.digest,
            finished_at=_now(),
        )
        self._note(run_id, f"release {release.number} of {step.stage}: {release.digest}")
        return release.number

    def _deploy_stage(
        self, stack_name: str, run_id: int, step: PipelineStep, release_number: int
    ) -> None:
        number = step.number
        if step.status == "SUCCEEDED":
            return
        if number is None:
            deployment = self._deploy.deploy(
                stack_name,
                step.stage,
                release_number,
                trigger=f"run {self._run(run_id).number}",
            )
            number = deployment.number
            self._set_step(
                run_id, step.position, status="RUNNING", number=number, started_at=_now()
            )
            self._note(run_id, f"deployment {number} of {step.stage} started")
        while True:
            deployment = self._deploy.get(stack_name, step.stage, number)
            if deployment.status in DEPLOYMENT_DONE:
                break
            changes.wait_end(deployment.log_path, POLL)  # its end wakes this at once
        if deployment.status != "COMPLETED":
            reason = deployment.reason or deployment.status
            self._set_step(
                run_id, step.position, status="FAILED", message=reason, finished_at=_now()
            )
            raise _StepFailed(f"deployment {number} of {step.stage} {deployment.status}: {reason}")
        self._set_step(run_id, step.position, status="SUCCEEDED", finished_at=_now())
        self._note(run_id, f"deployment {number} of {step.stage} COMPLETED")

    # -- checks between steps

    def _check_alive(self, run_id: int) -> None:
        run = self._run(run_id)
        if run.status in ("CANCELLED", "SUPERSEDED"):
            raise _Stop(run.status, run.error or run.status.lower())

    def _check_newest(self, stack_name: str, run_id: int, stage: str) -> None:
        """An older run never deploys over a newer one: it is superseded at that stage."""
        with self._sessions() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                return
            newer = session.scalar(
                select(PipelineRun.number)
                .join(PipelineStep, PipelineStep.run_id == PipelineRun.id)
                .where(
                    PipelineRun.stack_id == run.stack_id,
                    PipelineRun.number > run.number,
                    PipelineStep.stage == stage,
                    PipelineStep.kind.in_(("release", "gate")),
                    PipelineStep.status.in_(("RUNNING", "SUCCEEDED", "WAITING")),
                )
                .order_by(PipelineRun.number.desc())
            )
        if newer is not None:
            raise _Stop("SUPERSEDED", f"run {newer} reached {stage} first")

    # -- records

    def _lock(self, stack_name: str, stage: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((stack_name, stage), threading.Lock())

    def _row(self, session: Session, stack: Stack, number: int) -> PipelineRun:
        run = session.scalar(
            select(PipelineRun).where(
                PipelineRun.stack_id == stack.id, PipelineRun.number == number
            )
        )
        if run is None:
            raise NotFoundError(f"stack {stack.name} has no run {number}")
        return run

    def _run(self, run_id: int) -> PipelineRun:
        with self._sessions() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                raise _Stop("CANCELLED", "the run was deleted")
            session.expunge(run)
            return run

    def _stack(self, stack_name: str) -> Stack:
        with self._sessions() as session:
            stack = StackService.row(session, stack_name)
            session.expunge(stack)
            return stack

    def _step(self, run_id: int, position: int) -> PipelineStep:
        with self._sessions() as session:
            step = session.scalar(
                select(PipelineStep).where(
                    PipelineStep.run_id == run_id, PipelineStep.position == position
                )
            )
            if step is None:
                raise _StepFailed(f"run has no step {position}")
            session.expunge(step)
            return step

    def _stage_steps(
        self, run_id: int, stage: str
    ) -> tuple[PipelineStep, PipelineStep, PipelineStep]:
        with self._sessions() as session:
            steps = {
                s.kind: s
                for s in session.scalars(
                    select(PipelineStep).where(
                        PipelineStep.run_id == run_id, PipelineStep.stage == stage
                    )
                )
            }
            session.expunge_all()
        return steps["gate"], steps["release"], steps["deploy"]

    def _set_run(self, run_id: int, **values: object) -> None:
        with self._sessions.begin() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                return
            if run.status in ("CANCELLED", "SUPERSEDED") and "status" in values:
                values.pop("status")
            for key, value in values.items():
                setattr(run, key, value)

    def _set_step(self, run_id: int, position: int, **values: object) -> None:
        with self._sessions.begin() as session:
            step = session.scalar(
                select(PipelineStep).where(
                    PipelineStep.run_id == run_id, PipelineStep.position == position
                )
            )
            if step is not None:
                for key, value in values.items():
                    setattr(step, key, value)

    def _end(self, run_id: int, status: str, reason: str) -> None:
        with self._sessions.begin() as session:
            run = session.get(PipelineRun, run_id)
            if run is None:
                return
            if run.status in ("CANCELLED", "SUPERSEDED") and status not in (
                "CANCELLED",
                "SUPERSEDED",
            ):
                status, reason = run.status, run.error
            run.status, run.error, run.finished_at = status, reason, _now()
            log_path = run.log_path
            for step in session.scalars(
                select(PipelineStep).where(
                    PipelineStep.run_id == run_id,
                    PipelineStep.status.in_(("PENDING", "WAITING")),
                )
            ):
                step.status = "SKIPPED" if status in ("SUCCEEDED", "SKIPPED") else "CANCELLED"
        self._note(run_id, f"run {status}" + (f": {reason}" if reason else ""))
        changes.end(log_path)  # a follower of the run's log

    def _note(self, run_id: int, text: str) -> None:
        run = self._run(run_id)
        with self._sessions() as session:
            stack = session.get(Stack, run.stack_id)
            name = stack.name if stack else ""
        masker = SecretMasker(self._secret_values(name))
        path = Path(run.log_path)
        with BuildLog(path, masker, None) as run_log:
            run_log.line("run", LineKind.MESSAGE, text)

    def _view(self, session: Session, run: PipelineRun, stack_name: str) -> RunView:
        steps = session.scalars(
            select(PipelineStep)
            .where(PipelineStep.run_id == run.id)
            .order_by(PipelineStep.position)
        )
        return RunView(
            stack=stack_name,
            number=run.number,
            ref=run.ref,
            commit_sha=run.commit_sha,
            trigger=run.trigger,
            status=run.status,
            error=run.error,
            log_path=run.log_path,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            steps=[
                StepView(
                    position=s.position,
                    kind=s.kind,
                    stage=s.stage,
                    status=s.status,
                    number=s.number,
                    message=s.message,
                    started_at=s.started_at,
                    finished_at=s.finished_at,
                )
                for s in steps
            ],
        )


def _now() -> datetime:
    return datetime.now(UTC)
