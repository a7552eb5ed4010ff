"""The step planner of a pipeline run: from what is recorded, the one thing to do next.

Pure: ``decide`` reads a ``RunState`` (plain data the runner observed in the store) and
returns one action (plain data). The runner carries it out, observes again and asks
again, until the run ends or leaves. The rules of a run live here and are tested by
plan equality, with no thread and no store:

- runs of a stack build one at a time (the build lock), each stage takes one run at a
  time (the stage's lock); a newer run that reached a stage (its gate or its release)
  first supersedes an older one there;
- a build or deployment under way is followed to its end, even in a cancelled run;
- after a restart, recorded work is adopted, not repeated: an interrupted build is built
  again, a release or deployment this run already made is taken over;
- when the platform stops, the run leaves its records as they are and resumes at the
  next start;
- a protected stage always waits at its gate for an approval, whatever the build's
  stackyard.yml says (protection is kept on the platform, and a push cannot widen it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from stackyard.statuses import RUN_DONE, RUN_STOPPED, BuildStatus, RunStatus, StepStatus

BUILD_LOCK = ""
"""The lock of a stack's builds; a stage's lock is named after the stage."""


class StepKind(StrEnum):
    BUILD = "build"
    GATE = "gate"
    RELEASE = "release"
    DEPLOY = "deploy"


class Gate(StrEnum):
    """What a gate step's message says before it is passed."""

    AUTO = "auto"
    APPROVAL = "approval"
    BY_HAND = "promoted by hand"  # a promotion: whoever asked for it approved it


# -- what the runner observed


@dataclass(frozen=True)
class StepState:
    position: int
    kind: StepKind
    stage: str = ""
    status: StepStatus = StepStatus.PENDING
    number: int | None = None  # the build, release or deployment
    message: str = ""


@dataclass(frozen=True)
class BuildState:
    """The build that the build step follows."""

    number: int
    status: BuildStatus
    log_path: str = ""
    digest: str = ""
    commit_sha: str = ""
    error: str = ""


@dataclass(frozen=True)
class DeploymentState:
    """The deployment that a RUNNING deploy step follows."""

    number: int
    status: str  # the deployment's own: QUEUED IN_PROGRESS COMPLETED FAILED SUPERSEDED
    done: bool
    completed: bool
    log_path: str = ""
    reason: str = ""


@dataclass(frozen=True)
class NewerStep:
    """A newer run of the same stack that reached a stage: its gate or its release."""

    run: int
    stage: str
    kind: StepKind


@dataclass(frozen=True)
class Made:
    """A release or deployment this run made before the platform stopped, for a step
    that was RUNNING and has no number yet."""

    number: int
    digest: str = ""


@dataclass(frozen=True)
class RunState:
    number: int
    status: RunStatus
    steps: tuple[StepState, ...]
    error: str = ""
    build: BuildState | None = None  # once the build step has a number
    deployment: DeploymentState | None = None  # of the deploy step under way
    newer: tuple[NewerStep, ...] = ()
    made: Made | None = None
    interrupted_build: int | None = None  # the build a restart cut short
    stopping: bool = False  # the platform is shutting down
    protected: frozenset[str] = frozenset()  # the stack's protected stages, now


# -- what to do next


@dataclass(frozen=True)
class Action:
    @property
    def lock(self) -> str | None:
        """The lock the runner holds while it does this: BUILD_LOCK, a stage, or none."""
        return None


@dataclass(frozen=True)
class StageAction(Action):
    position: int
    stage: str

    @property
    def lock(self) -> str | None:
        return self.stage


@dataclass(frozen=True)
class BuildAction(Action):
    @property
    def lock(self) -> str | None:
        return BUILD_LOCK


@dataclass(frozen=True)
class Start(Action):
    """QUEUED -> RUNNING; a run that builds does it holding the stack's build lock."""

    builds: bool

    @property
    def lock(self) -> str | None:
        return BUILD_LOCK if self.builds else None


@dataclass(frozen=True)
class StartBuild(BuildAction):
    """Resolve the commit, apply the path filter, then start the build."""

    again_after: int | None = None  # the build a restart cut short


@dataclass(frozen=True)
class WaitBuild(BuildAction):
    number: int
    log_path: str


@dataclass(frozen=True)
class BuildDone(BuildAction):
    number: int
    digest: str
    commit_sha: str


@dataclass(frozen=True)
class AddStageSteps(Action):
    """Gate, release and deploy steps for each stage of the build's stackyard.yml."""


@dataclass(frozen=True)
class PassGate(Action):
    position: int
    stage: str


@dataclass(frozen=True)
class OpenGate(Action):
    position: int
    stage: str


@dataclass(frozen=True)
class WaitGate(Action):
    position: int
    stage: str


@dataclass(frozen=True)
class Approved(Action):
    """The gate was passed by an approval: the run runs again."""

    stage: str
    message: str


@dataclass(frozen=True)
class Release(StageAction):
    digest: str | None  # the run's own build; None for a promotion (the previous stage's)


@dataclass(frozen=True)
class AdoptRelease(StageAction):
    number: int
    digest: str


@dataclass(frozen=True)
class Deploy(StageAction):
    release: int


@dataclass(frozen=True)
class AdoptDeployment(StageAction):
    number: int


@dataclass(frozen=True)
class WaitDeployment(StageAction):
    number: int
    log_path: str


@dataclass(frozen=True)
class DeploymentDone(StageAction):
    number: int


@dataclass(frozen=True)
class FailStep(Action):
    """The step failed: record it, and end the run FAILED with ``reason``."""

    position: int
    message: str
    reason: str


@dataclass(frozen=True)
class End(Action):
    status: RunStatus
    reason: str


@dataclass(frozen=True)
class Leave(Action):
    """Nothing more for this thread: the run ended, or the platform is stopping (the
    records stay as they are, and the next start resumes the run)."""

    note: str = ""


STOPPING = "the platform is stopping; this run carries on when it starts again"
DONE_BY_ITSELF = tuple(s for s in RUN_DONE if s not in RUN_STOPPED)
FINISHED_STEP = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


def decide(run: RunState) -> Action:
    """The next action of ``run``; see the module's docstring for the rules."""
    if run.status in DONE_BY_ITSELF:
        return Leave()
    if run.stopping:
        return Leave(STOPPING)
    following = _follow_work(run)
    if following is not None:
        return following
    if run.status in RUN_STOPPED:
        return End(run.status, run.error or run.status.lower())
    failed = next((s for s in run.steps if s.status is StepStatus.FAILED), None)
    if failed is not None:  # recorded just before a restart, with the run still active
        return End(RunStatus.FAILED, failure(failed))
    building = _build(run)
    if building is not None:
        return building
    if len(run.steps) == 1:
        return AddStageSteps()
    for stage in stage_order(run.steps):
        action = _stage(run, stage)
        if action is not None:
            return action
    return End(RunStatus.SUCCEEDED, "")


def _follow_work(run: RunState) -> Action | None:
    """A build or deployment under way is followed to its end, whatever else happened."""
    build_step = run.steps[0]
    if build_step.status is StepStatus.RUNNING and build_step.number is not None:
        return _follow_build(run, build_step.number)
    deploying = next(
        (
            s
            for s in run.steps
            if s.kind is StepKind.DEPLOY and s.status is StepStatus.RUNNING and s.number is not None
        ),
        None,
    )
    if deploying is None or deploying.number is None:
        return None
    deployment = run.deployment
    if deployment is None or deployment.number != deploying.number:
        return FailStep(
            deploying.position,
            "its deployment record is gone",
            f"deployment {deploying.number} of {deploying.stage} is gone",
        )
    if not deployment.done:
        return WaitDeployment(
            deploying.position, deploying.stage, deployment.number, deployment.log_path
        )
    if deployment.completed:
        return DeploymentDone(deploying.position, deploying.stage, deployment.number)
    reason = deployment.reason or deployment.status
    return FailStep(
        deploying.position,
        reason,
        f"deployment {deployment.number} of {deploying.stage} {deployment.status}: {reason}",
    )


def _follow_build(run: RunState, number: int) -> Action:
    build = run.build
    if build is None or build.number != number:
        return FailStep(0, "its build record is gone", f"build {number} is gone")
    if build.status is BuildStatus.SUCCEEDED:
        return BuildDone(build.number, build.digest, build.commit_sha)
    if build.status is BuildStatus.FAILED:
        if build.number == run.interrupted_build and run.status not in RUN_STOPPED:
            return StartBuild(again_after=build.number)
        return FailStep(0, build.error, f"build {build.number} failed: {build.error}")
    return WaitBuild(build.number, build.log_path)


def _build(run: RunState) -> Action | None:
    step = run.steps[0]
    if step.status is StepStatus.SKIPPED:  # a promotion builds nothing
        return Start(builds=False) if run.status is RunStatus.QUEUED else None
    if step.status in FINISHED_STEP:
        return None
    if run.status is RunStatus.QUEUED:
        return Start(builds=True)
    return StartBuild()  # PENDING, or RUNNING before a build was recorded


def stage_order(steps: tuple[StepState, ...]) -> list[str]:
    """The run's stages, in the order of their steps."""
    return list(dict.fromkeys(s.stage for s in steps if s.kind is StepKind.GATE))


def _stage(run: RunState, stage: str) -> Action | None:
    """The next action at ``stage``, or None when the stage is done."""
    steps = {s.kind: s for s in run.steps if s.stage == stage}
    gate, release, deploy = steps[StepKind.GATE], steps[StepKind.RELEASE], steps[StepKind.DEPLOY]
    if deploy.status in FINISHED_STEP:
        return None
    if gate.status is StepStatus.PENDING:
        if gate.message == Gate.APPROVAL or stage in run.protected:
            return OpenGate(gate.position, stage)
        return PassGate(gate.position, stage)
    if gate.status is StepStatus.WAITING:
        return _superseded(run, stage, StepKind.GATE) or WaitGate(gate.position, stage)
    if run.status is RunStatus.WAITING:
        return Approved(stage, gate.message)
    if release.status not in FINISHED_STEP:
        return _superseded(run, stage, StepKind.GATE) or _release(run, release)
    # Under the stage's lock no newer run can release in between; after a restart it can.
    return _superseded(run, stage, StepKind.RELEASE) or _deploy(run, deploy, release)


def _release(run: RunState, step: StepState) -> Action:
    if step.status is StepStatus.RUNNING and run.made is not None:
        return AdoptRelease(step.position, step.stage, run.made.number, run.made.digest)
    promotion = run.steps[0].status is StepStatus.SKIPPED
    digest = None if promotion else run.steps[0].message or None
    return Release(step.position, step.stage, digest)


def _deploy(run: RunState, step: StepState, release: StepState) -> Action:
    if step.status is StepStatus.RUNNING and run.made is not None:
        return AdoptDeployment(step.position, step.stage, run.made.number)
    if release.number is None:
        return FailStep(
            step.position, "no release to deploy", f"release of {step.stage} has no number"
        )
    return Deploy(step.position, step.stage, release.number)


def _superseded(run: RunState, stage: str, since: StepKind) -> End | None:
    """End the run when a newer one reached ``stage``: at its gate or release (``since``
    GATE), or at its release (``since`` RELEASE)."""
    kinds = (StepKind.GATE, StepKind.RELEASE) if since is StepKind.GATE else (StepKind.RELEASE,)
    newer = [n.run for n in run.newer if n.stage == stage and n.kind in kinds]
    if not newer:
        return None
    return End(RunStatus.SUPERSEDED, f"run {max(newer)} reached {stage} first")


def failure(step: StepState) -> str:
    """The run's error for a step recorded FAILED."""
    if step.kind is StepKind.BUILD:
        return f"build {step.number} failed: {step.message}"
    if step.kind is StepKind.RELEASE:
        return f"release of {step.stage} failed: {step.message}"
    if step.kind is StepKind.DEPLOY:
        return f"deployment {step.number} of {step.stage} failed: {step.message}"
    return f"gate of {step.stage} failed: {step.message}"


def stage_steps(
    stages: list[tuple[str, bool]], *, first_position: int, by_hand: bool
) -> list[StepState]:
    """The gate, release and deploy steps of ``stages`` ((name, needs approval) in order).
    A promotion by hand is its own approval."""
    steps = []
    position = first_position
    for stage, approval in stages:
        gate = Gate.BY_HAND if by_hand else Gate.APPROVAL if approval else Gate.AUTO
        for kind in (StepKind.GATE, StepKind.RELEASE, StepKind.DEPLOY):
            message = str(gate) if kind is StepKind.GATE else ""
            steps.append(StepState(position, kind, stage, message=message))
            position += 1
    return steps
