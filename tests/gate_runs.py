"""Records of a pipeline run that built, deployed dev and staging and comes to prod's gate,
as a restart finds them; and a bounded wait for a run to reach a state. Used by the
run-signal and the access tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.pipeline.runs import RunView
from stackyard.pipeline.runs.plan import StepKind, stage_steps
from stackyard.statuses import BuildStatus, RunStatus, StepStatus
from stackyard.store.models import Build, PipelineRun, PipelineStep, Stack

DIGEST = "sha256:" + "a" * 64
BOUND = 30.0  # how long a test waits for a woken run


def run_at_gate(
    sessions: sessionmaker[Session],
    logs_dir: Path,
    stack_name: str,
    *,
    prod_gate: str = "approval",
    pushed_by: str = "",
) -> int:
    """Run 1 of ``stack_name``, at prod's gate; ``prod_gate`` is what the build's
    stackyard.yml said (``approval`` or ``auto``). Its runner starts with
    ``PipelineService.resume_interrupted``."""
    with sessions.begin() as session:
        stack = session.scalars(select(Stack).where(Stack.name == stack_name)).one()
        build = Build(stack_id=stack.id, number=1, status=BuildStatus.SUCCEEDED, digest=DIGEST)
        stages = [{"name": "dev"}, {"name": "staging"}, {"name": "prod", "promotion": prod_gate}]
        build.config, build.exported = {"stages": stages}, {}
        session.add(build)
        log_path = logs_dir / "runs" / stack_name / "1.log"
        run = PipelineRun(stack_id=stack.id, number=1, trigger="test", log_path=str(log_path))
        run.status, run.pushed_by = RunStatus.RUNNING, pushed_by
        session.add(run)
        session.flush()
        step = PipelineStep(run_id=run.id, position=0, kind=StepKind.BUILD, number=1)
        step.status, step.message = StepStatus.SUCCEEDED, DIGEST
        session.add(step)
        planned_stages = [("dev", False), ("staging", False), ("prod", prod_gate == "approval")]
        for planned in stage_steps(planned_stages, first_position=1, by_hand=False):
            done = planned.stage != "prod"
            session.add(
                PipelineStep(
                    run_id=run.id,
                    position=planned.position,
                    kind=planned.kind,
                    stage=planned.stage,
                    status=StepStatus.SUCCEEDED if done else StepStatus.PENDING,
                    number=1 if done and planned.kind is not StepKind.GATE else None,
                    message=planned.message,
                )
            )
        return run.number


def wait_for(read: Callable[[], RunView], done: Callable[[RunView], bool]) -> RunView:
    """The run read again once ``done`` holds (it may look at the log, written later)."""
    deadline = time.monotonic() + BOUND
    run = read()
    while not done(run) and time.monotonic() < deadline:
        time.sleep(0.02)
        run = read()
    assert done(run), run
    return read()


def waiting(run: RunView) -> bool:
    gate = any(s.status is StepStatus.WAITING for s in run.steps)
    return gate and run.status is RunStatus.WAITING
