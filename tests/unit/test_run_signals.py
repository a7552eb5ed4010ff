"""A run waiting at a gate wakes on a signal: an approval, a cancel, a newer run, shutdown.

The runner's re-check is set to 10 minutes here, so a run that moves within the tests'
bound moved because it was woken. The real services run on a fresh store (fake engine
and router); the run's earlier steps are written as records, as a restart finds them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from stackyard.engines.fake import FakeEngine
from stackyard.errors import ComponentError
from stackyard.pipeline.runs import PipelineService, RunView
from stackyard.pipeline.runs.plan import StepKind, stage_steps
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.source.git import GitSource
from stackyard.stacks.service import StackChanges
from stackyard.statuses import RunStatus, StepStatus
from stackyard.store.database import migrate, open_database, session_factory
from tests.gate_runs import BOUND, run_at_gate, wait_for, waiting

NEVER = 600.0  # the re-check: longer than any wait below


@dataclass
class Yard:
    services: Services
    settings: Settings
    sessions: sessionmaker[Session]
    runs: PipelineService

    def pipeline(self) -> PipelineService:
        """Another pipeline service on the same store: the platform after a restart."""
        return PipelineService(
            self.sessions,
            self.services.builds,
            self.services.releases,
            self.services.deploy,
            GitSource(self.settings.data_dir / "git"),
            self.services.protection,
            logs_dir=self.settings.logs_dir,
            work_recheck=NEVER,
            gate_recheck=NEVER,
        )


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    settings = Settings(data_dir=tmp_path)
    database = open_database(settings.database_url)
    migrate(database)
    sessions = session_factory(database)
    services = build_services(
        settings,
        sessions,
        RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password"),
        engine=FakeEngine(),
        router=FakeRouter(),
    )
    services.stacks.create("app", StackChanges(repo="https://example.com/app.git"))
    yard = Yard(services, settings, sessions, services.runs)
    yard.runs = yard.pipeline()
    try:
        yield yard
    finally:
        yard.runs.shutdown(timeout=BOUND)
        database.dispose()


def at_prod_gate(yard: Yard) -> int:
    """Records of a run that built, deployed dev and staging, and now meets prod's gate."""
    return run_at_gate(yard.sessions, yard.settings.logs_dir, "app")


def run_log(run: RunView) -> str:
    return Path(run.log_path).read_text()


def ended(status: RunStatus) -> Callable[[RunView], bool]:
    """The run's end is recorded: its last log line is written after its status."""
    return lambda run: f"run {status}" in run_log(run)


def test_an_approval_wakes_the_waiting_run_at_once(yard: Yard) -> None:
    number = at_prod_gate(yard)
    assert yard.runs.resume_interrupted() == 1
    wait_for(lambda: yard.runs.get("app", number), waiting)
    yard.runs.approve("app", "prod", by="alice")
    run = wait_for(lambda: yard.runs.get("app", number), ended(RunStatus.FAILED))
    assert run.status is RunStatus.FAILED
    # Approved, it went on to release prod; that fails here (staging has no release record).
    assert "prod approved (approved by alice)" in run_log(run)
    assert run.error.startswith("release of prod failed: ")


def test_a_failed_step_keeps_what_to_do_next(yard: Yard, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's error and its step's message are text with no hint line of their own: an
    error's hint (a target that did not answer: how to check it) goes in brackets."""
    number = at_prod_gate(yard)

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ComponentError(
            "target eu: the Docker engine at tcp://127.0.0.1:1 did not answer",
            hint="check it: stackyard targets check eu",
        )

    monkeypatch.setattr(yard.services.releases, "release", unreachable)
    yard.runs.resume_interrupted()
    wait_for(lambda: yard.runs.get("app", number), waiting)
    yard.runs.approve("app", "prod", by="alice")
    run = wait_for(lambda: yard.runs.get("app", number), ended(RunStatus.FAILED))
    said = "did not answer (check it: stackyard targets check eu)"
    assert (
        run.error
        == f"release of prod failed: target eu: the Docker engine at tcp://127.0.0.1:1 {said}"
    )
    assert said in next(s.message for s in run.steps if s.status is StepStatus.FAILED)


def test_a_cancel_wakes_the_waiting_run_at_once(yard: Yard) -> None:
    number = at_prod_gate(yard)
    yard.runs.resume_interrupted()
    wait_for(lambda: yard.runs.get("app", number), waiting)
    yard.runs.cancel("app", number, by="alice")
    run = wait_for(lambda: yard.runs.get("app", number), ended(RunStatus.CANCELLED))
    assert run.status is RunStatus.CANCELLED
    assert {s.status for s in run.steps if s.stage == "prod"} == {StepStatus.CANCELLED}


def test_a_newer_run_reaching_the_stage_wakes_and_supersedes_the_waiting_one(
    yard: Yard,
) -> None:
    number = at_prod_gate(yard)
    yard.runs.resume_interrupted()
    wait_for(lambda: yard.runs.get("app", number), waiting)
    newer = yard.runs.promote("app", "prod")  # its gate passes at once: it reached prod
    run = wait_for(lambda: yard.runs.get("app", number), ended(RunStatus.SUPERSEDED))
    assert run.status is RunStatus.SUPERSEDED
    assert run.error == f"run {newer.number} reached prod first"


def test_shutdown_wakes_the_waiting_run_which_waits_again_after_a_restart(yard: Yard) -> None:
    number = at_prod_gate(yard)
    yard.runs.resume_interrupted()
    wait_for(lambda: yard.runs.get("app", number), waiting)
    started = time.monotonic()
    yard.runs.shutdown(timeout=BOUND)
    assert time.monotonic() - started < BOUND  # woken, not timed out
    run = yard.runs.get("app", number)
    assert run.status is RunStatus.WAITING  # left as it was, for the next start
    assert "the platform is stopping" in run_log(run)
    yard.runs = yard.pipeline()
    assert yard.runs.resume_interrupted() == 1
    wait_for(lambda: yard.runs.get("app", number), lambda r: "resuming" in run_log(r))
    yard.runs.approve("app", "prod", by="alice")  # the gate is waiting again
    wait_for(lambda: yard.runs.get("app", number), ended(RunStatus.FAILED))


def test_a_promotion_resumes_after_a_restart(yard: Yard) -> None:
    at_prod_gate(yard)
    yard.runs.cancel("app", 1, by="alice")  # out of the way: only the promotion runs
    yard.runs.shutdown(timeout=BOUND)
    yard.runs = yard.pipeline()
    promotion = yard.runs._records.create(
        "app",
        trigger="promote staging -> prod",
        ref=None,
        commit=None,
        before=None,
        source_url=None,
        stages=stage_steps([("prod", False)], first_position=1, by_hand=True),
    )[1]  # recorded, then the platform stopped before its thread started
    assert yard.runs.resume_interrupted() == 1
    run = wait_for(lambda: yard.runs.get("app", promotion), ended(RunStatus.FAILED))
    assert [(s.kind, s.stage, s.status) for s in run.steps[:2]] == [
        (StepKind.BUILD, "", StepStatus.SKIPPED),
        (StepKind.GATE, "prod", StepStatus.SUCCEEDED),
    ]
    assert run.error.startswith("release of prod failed: ")


def test_a_run_an_older_version_ended_as_interrupted_still_reads(yard: Yard) -> None:
    number = at_prod_gate(yard)
    with yard.sessions.begin() as session:  # as an older Stackyard left it: a plain string
        session.execute(
            text("UPDATE pipeline_runs SET status = 'INTERRUPTED' WHERE number = :n"),
            {"n": number},
        )
    assert yard.runs.get("app", number).status is RunStatus.INTERRUPTED
    assert yard.runs.resume_interrupted() == 0  # it ended; nothing resumes it
