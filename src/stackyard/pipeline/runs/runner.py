"""The runner of one pipeline run: observe, decide, do, until the run ends or leaves.

The pipeline service gives each run a thread that runs a ``Runner``. It observes the
run's records (and the build or deployment a step follows), asks ``plan.decide`` what
comes next and does that: one small handler per action. It holds the lock an action
names (the stack's build lock, or a stage's) across consecutive actions that name it,
and decides again once it has the lock. Waits end on a change signal (an approval, a
cancel, a newer run's progress, the end of a build or deployment, shutdown), not on a
poll; a slow re-check is the safety net for a change nobody signalled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from stackyard import changes
from stackyard.deploy.records import TERMINAL as DEPLOYMENT_DONE
from stackyard.deploy.service import DeployService
from stackyard.errors import NotFoundError, StackyardError
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.runs import plan
from stackyard.pipeline.runs.filters import path_filter, skip_reason
from stackyard.pipeline.runs.records import RunGone, RunRecord, RunRecords
from stackyard.source.base import Source
from stackyard.stacks.service import StackService
from stackyard.statuses import RunStatus, StepStatus

log = logging.getLogger(__name__)

WORK_RECHECK = 1.0
"""Seconds between looks at a build or deployment whose end no signal announced."""
GATE_RECHECK = 30.0
"""Seconds between looks at a gate: an approval, a cancel and a newer run are all
signalled; this only notices a deleted stack."""


@dataclass(frozen=True)
class RunnerParts:
    """What every runner uses: the records, the services it drives, the shared locks."""

    records: RunRecords
    stacks: StackService
    builds: BuildService
    releases: ReleaseService
    deploy: DeployService
    source: Source
    lock: Callable[[str, str], threading.Lock]  # (stack, BUILD_LOCK or stage)
    stopping: threading.Event
    protected_stages: Callable[[str], frozenset[str]]  # the stack's protected stages
    work_recheck: float = WORK_RECHECK
    gate_recheck: float = GATE_RECHECK


class Runner:
    def __init__(
        self,
        parts: RunnerParts,
        stack: str,
        run_id: int,
        *,
        changed_paths: list[str] | None = None,
        resumed: bool = False,
    ) -> None:
        self.parts = parts
        self.records = parts.records
        self.stack = stack
        self.run_id = run_id
        self.topic = parts.records.topic(stack)
        self.changed_paths = changed_paths  # given by a webhook; else asked of git
        self.resumed = resumed
        self.interrupted_build: int | None = None
        self.record: RunRecord | None = None

    def run(self) -> None:
        """The thread's body: drive the run; any error ends it FAILED, with its cause."""
        try:
            self._drive()
        except RunGone:
            log.info("run %s of %s: its record is gone; stopping", self.run_id, self.stack)
        except StackyardError as exc:
            self._end_after_error(exc.message)
        except Exception as exc:  # a bug still ends the run, with its cause in the log
            log.exception("run %s of %s failed", self.run_id, self.stack)
            self._end_after_error(f"internal error: {exc!r}")

    def _end_after_error(self, reason: str) -> None:
        with contextlib.suppress(RunGone):
            self.end(RunStatus.FAILED, reason)

    def _drive(self) -> None:
        held: tuple[str, threading.Lock] | None = None
        try:
            while True:
                seen = changes.generation(self.topic)  # before looking: no change is missed
                action = plan.decide(self.observe())
                if action.lock != (held[0] if held else None):
                    if held is not None:
                        held[1].release()
                        held = None
                    if action.lock is not None:
                        lock = self.parts.lock(self.stack, action.lock)
                        lock.acquire()
                        held = (action.lock, lock)
                        continue  # decide again: the run may have moved on while it waited
                if not self.do(action, seen):
                    return
        finally:
            if held is not None:
                held[1].release()

    # -- observe

    def observe(self) -> plan.RunState:
        record = self.records.observe(self.run_id)
        self.record = record
        build_step = record.steps[0]
        if self.resumed:
            self.resumed = False
            if build_step.status is StepStatus.RUNNING:
                self.interrupted_build = build_step.number
        return plan.RunState(
            number=record.number,
            status=record.status,
            error=record.error,
            steps=record.steps,
            build=self._build(build_step),
            deployment=self._deployment(record.steps),
            newer=record.newer,
            made=self._made(record),
            interrupted_build=self.interrupted_build,
            stopping=self.parts.stopping.is_set(),
            protected=self.parts.protected_stages(self.stack),
        )

    def _build(self, step: plan.StepState) -> plan.BuildState | None:
        if step.status is not StepStatus.RUNNING or step.number is None:
            return None
        try:
            build = self.parts.builds.get(self.stack, step.number)
        except NotFoundError:
            return None
        return plan.BuildState(
            build.number,
            build.status,
            build.log_path,
            build.digest or "",
            build.commit_sha,
            build.error,
        )

    def _deployment(self, steps: tuple[plan.StepState, ...]) -> plan.DeploymentState | None:
        step = _running(steps, plan.StepKind.DEPLOY, numbered=True)
        if step is None or step.number is None:
            return None
        try:
            deployment = self.parts.deploy.get(self.stack, step.stage, step.number)
        except NotFoundError:
            return None
        return plan.DeploymentState(
            deployment.number,
            deployment.status,
            done=deployment.status in DEPLOYMENT_DONE,
            completed=deployment.status == "COMPLETED",
            log_path=deployment.log_path,
            reason=deployment.reason,
        )

    def _made(self, record: RunRecord) -> plan.Made | None:
        """What this run made for a step a restart left RUNNING without a number."""
        by = f"run {record.number}"
        release = _running(record.steps, plan.StepKind.RELEASE, numbered=False)
        if release is not None:
            made = [r for r in self.parts.releases.list(self.stack, release.stage)
                    if r.created_by == by]  # fmt: skip
            newest = max(made, key=lambda r: r.number, default=None)
            return plan.Made(newest.number, newest.digest) if newest else None
        deploy = _running(record.steps, plan.StepKind.DEPLOY, numbered=False)
        if deploy is not None:
            started = [d.number for d in self.parts.deploy.list(self.stack, deploy.stage)
                       if d.trigger == by]  # fmt: skip
            return plan.Made(max(started)) if started else None
        return None

    # -- do

    def do(self, action: plan.Action, seen: int) -> bool:
        """Carry out ``action``; False when this thread is done with the run."""
        match action:
            case plan.Start():
                self.set_run(status=RunStatus.RUNNING, started_at=_now())
            case plan.StartBuild(again_after=again):
                if again is not None:
                    self.note(f"build {again} was interrupted; building again")
                return self.start_build()
            case plan.BuildDone(number=number, digest=digest, commit_sha=sha):
                self.set_run(commit_sha=sha)
                self.finish_step(0, StepStatus.SUCCEEDED, message=digest)
                self.note(f"build {number} produced {digest}")
            case plan.AddStageSteps():
                self.add_stage_steps()
            case plan.PassGate(position=position):
                now = _now()
                self.set_step(position, status=StepStatus.SUCCEEDED, started_at=now,
                              finished_at=now)  # fmt: skip
            case plan.OpenGate(position=position, stage=stage):
                self.records.open_gate(self.run_id, position)
                changes.notify(self.topic)
                self.note(
                    f"waiting for an approval to enter {stage}: "
                    f"stackyard approve {self.stack} --stage {stage}"
                )
            case plan.Approved(stage=stage, message=message):
                self.note(f"{stage} approved ({message})")
                self.set_run(status=RunStatus.RUNNING)
            case plan.Release():
                return self.release(action)
            case plan.AdoptRelease(position=position, stage=stage, number=number, digest=digest):
                self.finish_step(position, StepStatus.SUCCEEDED, number=number, message=digest)
                self.note(f"release {number} of {stage} was made before the platform stopped")
            case plan.Deploy():
                return self.deploy(action)
            case plan.AdoptDeployment(position=position, stage=stage, number=number):
                self.set_step(position, number=number)
                self.note(f"deployment {number} of {stage} was started before the platform "
                          "stopped; following it")  # fmt: skip
            case plan.DeploymentDone(position=position, stage=stage, number=number):
                self.finish_step(position, StepStatus.SUCCEEDED)
                self.note(f"deployment {number} of {stage} COMPLETED")
            case plan.WaitBuild(log_path=log_path) | plan.WaitDeployment(log_path=log_path):
                changes.wait_any({self.topic: seen}, [log_path], self.parts.work_recheck)
            case plan.WaitGate():
                changes.wait_any({self.topic: seen}, [], self.parts.gate_recheck)
            case plan.FailStep(position=position, message=message, reason=reason):
                return self.fail(position, message, reason)
            case plan.End(status=status, reason=reason):
                self.end(status, reason)
                return False
            case plan.Leave(note=note):
                if note:
                    self.note(note)
                return False
            case _:
                raise TypeError(f"no handler for {action!r}")
        return True

    def start_build(self) -> bool:
        """Resolve the commit, apply the path filter, start the build; False if SKIPPED."""
        record = self._current()
        stack = self.parts.stacks.get(self.stack)
        source = self.parts.source
        url = record.source_url or stack.repo
        commit = source.resolve(self.stack, url, record.commit_sha or None, stack.branch)
        self.set_run(commit_sha=commit.sha)
        raw = source.read_file(self.stack, commit.sha, "stackyard.yml")
        found = path_filter(raw, f"stackyard.yml at {commit.sha[:12]}")
        if found.problem:
            self.note(f"{found.problem}; no path filter (the build reports the file)")
        if found.paths:
            changed = self.changed_paths
            if changed is None:
                changed = source.changed_paths(self.stack, record.before_sha or None, commit.sha)
            reason = skip_reason(found, changed)
            if reason is not None:
                self.end(RunStatus.SKIPPED, reason)
                return False
        build = self.parts.builds.start(
            self.stack, commit.sha, source_url=record.source_url or None
        )
        self.set_step(0, status=StepStatus.RUNNING, number=build.number, started_at=_now())
        self.note(f"build {build.number} started")
        return True

    def add_stage_steps(self) -> None:
        config = self.records.config(self.stack, self.run_id)
        stages = [(s.name, s.promotion == "approval") for s in config.stages]
        if not stages:
            raise StackyardError(f"stackyard.yml of run {self._current().number} has no stage")
        steps = plan.stage_steps(stages, first_position=1, by_hand=False)
        self.records.add_steps(self.run_id, steps)
        changes.notify(self.topic)

    def release(self, action: plan.Release) -> bool:
        self.set_step(action.position, status=StepStatus.RUNNING, started_at=_now())
        try:
            release = self.parts.releases.release(
                self.stack, action.stage, created_by=self._by(), digest=action.digest
            )
        except StackyardError as exc:
            reason = f"release of {action.stage} failed: {exc.with_hint()}"
            return self.fail(action.position, exc.with_hint(), reason)
        self.finish_step(
            action.position, StepStatus.SUCCEEDED, number=release.number, message=release.digest
        )
        self.note(f"release {release.number} of {action.stage}: {release.digest}")
        return True

    def deploy(self, action: plan.Deploy) -> bool:
        # RUNNING before the deployment exists: after a restart, the run looks for the
        # deployment it started instead of starting a second one.
        self.set_step(action.position, status=StepStatus.RUNNING, started_at=_now())
        try:
            deployment = self.parts.deploy.deploy(
                self.stack, action.stage, action.release, trigger=self._by()
            )
        except StackyardError as exc:
            reason = f"deployment of {action.stage} failed: {exc.with_hint()}"
            return self.fail(action.position, exc.with_hint(), reason)
        self.set_step(action.position, number=deployment.number)
        self.note(f"deployment {deployment.number} of {action.stage} started")
        return True

    def fail(self, position: int, message: str, reason: str) -> bool:
        self.finish_step(position, StepStatus.FAILED, message=message)
        self.end(RunStatus.FAILED, reason)
        return False

    # -- records: every write signals the stack's other runs, which decide again

    def set_run(self, **values: object) -> None:
        self.records.set_run(self.run_id, **values)
        changes.notify(self.topic)

    def set_step(self, position: int, **values: object) -> None:
        self.records.set_step(self.run_id, position, **values)
        changes.notify(self.topic)

    def end(self, status: RunStatus, reason: str) -> None:
        self.records.end(self.run_id, status, reason)
        changes.notify(self.topic)

    def finish_step(self, position: int, status: StepStatus, **values: object) -> None:
        self.set_step(position, status=status, finished_at=_now(), **values)

    def note(self, text: str) -> None:
        self.records.note(self.run_id, text)

    def _current(self) -> RunRecord:
        return self.record or self.records.observe(self.run_id)

    def _by(self) -> str:
        """Who made a release or deployment, as its record says: ``run N``."""
        return f"run {self._current().number}"


def _running(
    steps: tuple[plan.StepState, ...], kind: plan.StepKind, *, numbered: bool
) -> plan.StepState | None:
    """The step of ``kind`` that is RUNNING, with a number or without one."""
    return next(
        (
            s
            for s in steps
            if s.kind is kind
            and s.status is StepStatus.RUNNING
            and (s.number is not None) == numbered
        ),
        None,
    )


def _now() -> datetime:
    return datetime.now(UTC)
