"""The step planner of pipeline runs: each rule as plan equality, no thread, no store."""

from __future__ import annotations

from dataclasses import replace

from stackyard.pipeline.runs.plan import (
    BUILD_LOCK,
    STOPPING,
    AddStageSteps,
    AdoptDeployment,
    AdoptRelease,
    Approved,
    BuildDone,
    BuildState,
    Deploy,
    DeploymentDone,
    DeploymentState,
    End,
    FailStep,
    Gate,
    Leave,
    Made,
    NewerStep,
    OpenGate,
    PassGate,
    Release,
    RunState,
    Start,
    StartBuild,
    StepKind,
    StepState,
    WaitBuild,
    WaitDeployment,
    WaitGate,
    decide,
    stage_steps,
)
from stackyard.statuses import BuildStatus, RunStatus, StepStatus

DIGEST = "sha256:" + "d" * 64
BUILD_LOG = "/logs/builds/app/3.log"
DEPLOY_LOG = "/logs/deployments/app/dev/4.log"
GATE, RELEASE, DEPLOY = StepKind.GATE, StepKind.RELEASE, StepKind.DEPLOY
PENDING, RUNNING, WAITING = StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING
DONE, FAILED = StepStatus.SUCCEEDED, StepStatus.FAILED


def built(status: StepStatus = DONE, number: int | None = 3, message: str = DIGEST) -> StepState:
    return StepState(0, StepKind.BUILD, status=status, number=number, message=message)


def stages(*approval: str) -> tuple[StepState, ...]:
    """Pending steps of dev, staging, prod; ``approval`` names the stages behind one."""
    return tuple(
        stage_steps(
            [(name, name in approval) for name in ("dev", "staging", "prod")],
            first_position=1,
            by_hand=False,
        )
    )


def at(
    steps: tuple[StepState, ...], stage: str, kind: StepKind, **changes: object
) -> tuple[StepState, ...]:
    """``steps`` with the ``kind`` step of ``stage`` changed."""
    return tuple(
        replace(s, **changes) if (s.stage, s.kind) == (stage, kind) else s  # type: ignore[arg-type]
        for s in steps
    )


def through(steps: tuple[StepState, ...], *done: str) -> tuple[StepState, ...]:
    """``steps`` with every step of the ``done`` stages SUCCEEDED."""
    for stage in done:
        steps = at(steps, stage, GATE, status=DONE)
        steps = at(steps, stage, RELEASE, status=DONE, number=7, message=DIGEST)
        steps = at(steps, stage, DEPLOY, status=DONE, number=4)
    return steps


def state(*steps: StepState, status: RunStatus = RunStatus.RUNNING, **fields: object) -> RunState:
    return RunState(number=5, status=status, steps=steps, **fields)  # type: ignore[arg-type]


# -- the build


def test_a_queued_run_starts_under_the_build_lock() -> None:
    action = decide(state(built(PENDING, None, ""), status=RunStatus.QUEUED))
    assert action == Start(builds=True)
    assert action.lock == BUILD_LOCK


def test_a_queued_promotion_starts_without_the_build_lock() -> None:
    promotion = (StepState(0, StepKind.BUILD, status=StepStatus.SKIPPED), *stages()[:3])
    action = decide(state(*promotion, status=RunStatus.QUEUED))
    assert action == Start(builds=False)
    assert action.lock is None


def test_a_started_run_builds_then_follows_its_build() -> None:
    assert decide(state(built(PENDING, None, ""))) == StartBuild()
    running = BuildState(3, BuildStatus.RUNNING, BUILD_LOG)
    assert decide(state(built(RUNNING, 3, ""), build=running)) == WaitBuild(3, BUILD_LOG)
    assert WaitBuild(3, BUILD_LOG).lock == BUILD_LOCK


def test_a_finished_build_is_recorded_with_its_digest_and_commit() -> None:
    build = BuildState(3, BuildStatus.SUCCEEDED, BUILD_LOG, DIGEST, "abc123")
    assert decide(state(built(RUNNING, 3, ""), build=build)) == BuildDone(3, DIGEST, "abc123")


def test_a_failed_build_fails_the_step_and_names_it() -> None:
    build = BuildState(3, BuildStatus.FAILED, BUILD_LOG, error="Dockerfile: exit 7")
    assert decide(state(built(RUNNING, 3, ""), build=build)) == FailStep(
        0, "Dockerfile: exit 7", "build 3 failed: Dockerfile: exit 7"
    )


def test_after_a_restart_an_interrupted_build_is_built_again_once() -> None:
    build = BuildState(3, BuildStatus.FAILED, BUILD_LOG, error="interrupted: ...")
    resumed = state(built(RUNNING, 3, ""), build=build, interrupted_build=3)
    assert decide(resumed) == StartBuild(again_after=3)
    # The build started again fails for real: that failure stands.
    again = BuildState(4, BuildStatus.FAILED, BUILD_LOG, error="exit 1")
    assert decide(replace(resumed, steps=(built(RUNNING, 4, ""),), build=again)) == FailStep(
        0, "exit 1", "build 4 failed: exit 1"
    )


def test_a_build_that_finished_during_a_restart_is_not_built_again() -> None:
    build = BuildState(3, BuildStatus.SUCCEEDED, BUILD_LOG, DIGEST, "abc123")
    resumed = state(built(RUNNING, 3, ""), build=build, interrupted_build=3)
    assert decide(resumed) == BuildDone(3, DIGEST, "abc123")


def test_stage_steps_come_after_the_build() -> None:
    assert decide(state(built())) == AddStageSteps()


def test_stage_steps_put_a_gate_before_each_stage() -> None:
    steps = stage_steps([("dev", False), ("prod", True)], first_position=1, by_hand=False)
    assert [(s.position, s.kind, s.stage, s.message) for s in steps] == [
        (1, GATE, "dev", Gate.AUTO),
        (2, RELEASE, "dev", ""),
        (3, DEPLOY, "dev", ""),
        (4, GATE, "prod", Gate.APPROVAL),
        (5, RELEASE, "prod", ""),
        (6, DEPLOY, "prod", ""),
    ]
    by_hand = stage_steps([("prod", True)], first_position=1, by_hand=True)
    assert by_hand[0].message == Gate.BY_HAND  # the promotion is its own approval


# -- gates


def test_an_auto_gate_passes_and_an_approval_gate_opens() -> None:
    assert decide(state(built(), *stages())) == PassGate(1, "dev")
    steps = through(stages("prod"), "dev", "staging")
    assert decide(state(built(), *steps)) == OpenGate(7, "prod")
    assert PassGate(1, "dev").lock is None


def test_a_promotion_by_hand_passes_its_gate() -> None:
    steps = stage_steps([("prod", True)], first_position=1, by_hand=True)
    promotion = StepState(0, StepKind.BUILD, status=StepStatus.SKIPPED)
    assert decide(state(promotion, *steps)) == PassGate(1, "prod")


def test_a_protected_stage_opens_its_gate_whatever_stackyard_yml_says() -> None:
    """Protection lives on the platform: an auto gate (the pushed stackyard.yml's choice)
    and a promotion by hand both wait for an approval at a protected stage."""
    steps = through(stages(), "dev", "staging")  # prod: promotion auto
    assert decide(state(built(), *steps)) == PassGate(7, "prod")
    protected = frozenset({"prod"})
    assert decide(state(built(), *steps, protected=protected)) == OpenGate(7, "prod")
    by_hand = stage_steps([("prod", False)], first_position=1, by_hand=True)
    promotion = StepState(0, StepKind.BUILD, status=StepStatus.SKIPPED)
    assert decide(state(promotion, *by_hand, protected=protected)) == OpenGate(1, "prod")


def test_a_waiting_gate_waits_until_approved_then_the_run_runs_again() -> None:
    steps = at(through(stages("prod"), "dev", "staging"), "prod", GATE, status=WAITING)
    assert decide(state(built(), *steps, status=RunStatus.WAITING)) == WaitGate(7, "prod")
    approved = at(steps, "prod", GATE, status=DONE, message="approved by admin")
    assert decide(state(built(), *approved, status=RunStatus.WAITING)) == Approved(
        "prod", "approved by admin"
    )
    assert decide(state(built(), *approved)) == Release(8, "prod", DIGEST)


def test_a_newer_run_at_the_gate_supersedes_a_waiting_run() -> None:
    steps = at(through(stages("prod"), "dev", "staging"), "prod", GATE, status=WAITING)
    newer = (NewerStep(6, "prod", GATE), NewerStep(7, "staging", RELEASE))
    assert decide(state(built(), *steps, status=RunStatus.WAITING, newer=newer)) == End(
        RunStatus.SUPERSEDED, "run 6 reached prod first"
    )


def test_a_cancelled_run_ends_even_while_waiting_at_a_gate() -> None:
    steps = at(through(stages("prod"), "dev", "staging"), "prod", GATE, status=StepStatus.CANCELLED)
    cancelled = state(built(), *steps, status=RunStatus.CANCELLED, error="cancelled by admin")
    assert decide(cancelled) == End(RunStatus.CANCELLED, "cancelled by admin")


# -- release and deployment


def test_a_stage_releases_the_runs_own_build_under_the_stages_lock() -> None:
    steps = at(stages(), "dev", GATE, status=DONE)
    action = decide(state(built(), *steps))
    assert action == Release(2, "dev", DIGEST)
    assert action.lock == "dev"


def test_a_promotion_releases_what_the_previous_stage_runs() -> None:
    steps = at(tuple(stage_steps([("prod", False)], first_position=1, by_hand=True)), "prod",
               GATE, status=DONE)  # fmt: skip
    promotion = StepState(0, StepKind.BUILD, status=StepStatus.SKIPPED)
    assert decide(state(promotion, *steps)) == Release(2, "prod", None)


def test_an_older_run_never_releases_where_a_newer_one_arrived() -> None:
    steps = at(stages(), "dev", GATE, status=DONE)
    for kind in (GATE, RELEASE):
        newer = (NewerStep(9, "dev", kind), NewerStep(8, "dev", kind))
        assert decide(state(built(), *steps, newer=newer)) == End(
            RunStatus.SUPERSEDED, "run 9 reached dev first"
        )
    elsewhere = (NewerStep(9, "staging", GATE),)
    assert decide(state(built(), *steps, newer=elsewhere)) == Release(2, "dev", DIGEST)


def test_the_release_is_deployed_then_followed_to_its_end() -> None:
    released = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=DONE, number=7)
    action = decide(state(built(), *released))
    assert action == Deploy(3, "dev", 7)
    assert action.lock == "dev"
    deploying = at(released, "dev", DEPLOY, status=RUNNING, number=4)
    going = DeploymentState(4, "IN_PROGRESS", done=False, completed=False, log_path=DEPLOY_LOG)
    assert decide(state(built(), *deploying, deployment=going)) == WaitDeployment(
        3, "dev", 4, DEPLOY_LOG
    )
    completed = replace(going, status="COMPLETED", done=True, completed=True)
    assert decide(state(built(), *deploying, deployment=completed)) == DeploymentDone(3, "dev", 4)


def test_a_failed_deployment_fails_the_run_with_its_reason() -> None:
    released = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=DONE, number=7)
    deploying = at(released, "dev", DEPLOY, status=RUNNING, number=4)
    failed = DeploymentState(4, "FAILED", done=True, completed=False, reason="circuit breaker")
    assert decide(state(built(), *deploying, deployment=failed)) == FailStep(
        3, "circuit breaker", "deployment 4 of dev FAILED: circuit breaker"
    )


def test_a_newer_runs_gate_does_not_stop_a_deployment_after_its_release() -> None:
    released = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=DONE, number=7)
    at_gate = (NewerStep(6, "dev", GATE),)
    assert decide(state(built(), *released, newer=at_gate)) == Deploy(3, "dev", 7)
    released_too = (NewerStep(6, "dev", RELEASE),)  # after a restart, without the lock
    assert decide(state(built(), *released, newer=released_too)) == End(
        RunStatus.SUPERSEDED, "run 6 reached dev first"
    )


def test_a_cancel_lets_the_deployment_under_way_finish_first() -> None:
    released = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=DONE, number=7)
    deploying = at(released, "dev", DEPLOY, status=RUNNING, number=4)
    going = DeploymentState(4, "IN_PROGRESS", done=False, completed=False, log_path=DEPLOY_LOG)
    cancelled = state(built(), *deploying, status=RunStatus.CANCELLED, deployment=going)
    assert decide(cancelled) == WaitDeployment(3, "dev", 4, DEPLOY_LOG)
    finished = replace(
        cancelled,
        steps=(built(), *at(deploying, "dev", DEPLOY, status=DONE)),
        deployment=None,
        error="cancelled by admin",
    )
    assert decide(finished) == End(RunStatus.CANCELLED, "cancelled by admin")


def test_every_stage_done_is_success() -> None:
    assert decide(state(built(), *through(stages(), "dev", "staging", "prod"))) == End(
        RunStatus.SUCCEEDED, ""
    )


# -- resume after a kill


def test_after_a_restart_a_release_already_made_is_taken_over() -> None:
    steps = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=RUNNING)
    made = Made(7, DIGEST)
    assert decide(state(built(), *steps, made=made)) == AdoptRelease(2, "dev", 7, DIGEST)
    assert decide(state(built(), *steps)) == Release(2, "dev", DIGEST)  # none made: again


def test_after_a_restart_a_deployment_already_started_is_followed_not_repeated() -> None:
    released = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=DONE, number=7)
    starting = at(released, "dev", DEPLOY, status=RUNNING)
    assert decide(state(built(), *starting, made=Made(4))) == AdoptDeployment(3, "dev", 4)
    assert decide(state(built(), *starting)) == Deploy(3, "dev", 7)


def test_after_a_restart_a_step_recorded_failed_ends_the_run() -> None:
    steps = at(at(stages(), "dev", GATE, status=DONE), "dev", RELEASE, status=FAILED,
               message="release.yml FAILED")  # fmt: skip
    assert decide(state(built(), *steps)) == End(
        RunStatus.FAILED, "release of dev failed: release.yml FAILED"
    )


def test_a_stopping_platform_leaves_the_run_as_it_is() -> None:
    waiting = at(through(stages("prod"), "dev", "staging"), "prod", GATE, status=WAITING)
    building = BuildState(3, BuildStatus.RUNNING, BUILD_LOG)
    for run in (
        state(built(), *waiting, status=RunStatus.WAITING, stopping=True),
        state(built(RUNNING, 3, ""), build=building, stopping=True),
        state(built(PENDING, None, ""), status=RunStatus.QUEUED, stopping=True),
    ):
        assert decide(run) == Leave(STOPPING)


def test_a_run_that_ended_by_itself_needs_nothing() -> None:
    ended = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.INTERRUPTED)
    for status in ended:
        assert decide(state(built(), status=status)) == Leave()
