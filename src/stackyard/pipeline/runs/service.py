"""The pipeline service: what the API and the triggers call to start and steer runs.

Triggers (git push, webhooks, polling, variable changes, the CLI) all call ``start_run``.
A run is recorded before anything starts, then driven by its own ``Runner`` thread;
``approve``, ``cancel`` and a newer run wake a run waiting at a gate through the stack's
change signal, and ``shutdown`` wakes every one of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.access.protection import ProtectionService
from stackyard.access.rules import four_eyes_refusal
from stackyard.deploy.service import DeployService
from stackyard.errors import UsageError
from stackyard.notify.outbox import Outbox
from stackyard.pipeline.builds import BuildService
from stackyard.pipeline.releases import ReleaseService
from stackyard.pipeline.runs import plan
from stackyard.pipeline.runs.records import RunRecords, RunView
from stackyard.pipeline.runs.runner import GATE_RECHECK, WORK_RECHECK, Runner, RunnerParts
from stackyard.source.base import Source
from stackyard.stacks.service import StackService


@dataclass
class _Live:
    thread: threading.Thread
    topic: Path


class PipelineService:
    """Starts and steers pipeline runs, each on its own thread."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        builds: BuildService,
        releases: ReleaseService,
        deploy: DeployService,
        source: Source,
        protection: ProtectionService,
        *,
        logs_dir: Path,
        secret_values: Callable[[str], list[str]] | None = None,
        work_recheck: float = WORK_RECHECK,
        gate_recheck: float = GATE_RECHECK,
        outbox: Outbox | None = None,
    ) -> None:
        self._records = RunRecords(sessions, logs_dir, secret_values or (lambda _stack: []), outbox)
        self._protection = protection
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._live: dict[int, _Live] = {}
        self._stopping = threading.Event()
        self._parts = RunnerParts(
            records=self._records,
            stacks=StackService(sessions),
            builds=builds,
            releases=releases,
            deploy=deploy,
            source=source,
            lock=self._lock,
            stopping=self._stopping,
            protected_stages=protection.protected_stages,
            work_recheck=work_recheck,
            gate_recheck=gate_recheck,
        )

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
        pushed_by: str = "",
        delivery: str | None = None,
    ) -> RunView:
        """Record a run (QUEUED) and start it; for a webhook ``delivery`` the stack's run
        started by it before, when there is one (a git host delivers a push again when
        asked to, with the same id: it is not built twice).

        ``ref``/``commit``: what to build (default: the stack's branch head). ``before``:
        the previous sha of the pushed branch, for path filters. ``source_url``: where to
        fetch the commit from when it is not the stack's repo (the platform's own git
        remote). ``changed_paths``: when the trigger already knows them (webhooks). A run
        whose changes miss the stack's ``build.paths`` filter is recorded as SKIPPED.
        ``stages``: a promotion, which builds nothing and runs only these stages.
        ``pushed_by``: who pushed the commit or asked for the run ("" when unknown), which
        a four-eyes gate compares with its approver.
        """
        steps = None
        if stages is not None:
            steps = plan.stage_steps(
                [(stage, False) for stage in stages], first_position=1, by_hand=True
            )
        try:
            run_id, number = self._records.create(
                stack_name,
                trigger=trigger,
                ref=ref,
                commit=commit,
                before=before,
                source_url=source_url,
                stages=steps,
                pushed_by=pushed_by,
                delivery=delivery,
            )
        except IntegrityError:
            # The delivery's run exists (the stack's unique delivery index): that one.
            seen = self.delivered(stack_name, delivery) if delivery else None
            if seen is None:
                raise
            return seen
        changes.notify(self._records.topic(stack_name))  # an older QUEUED run was superseded
        self._launch(Runner(self._parts, stack_name, run_id, changed_paths=changed_paths))
        return self.get(stack_name, number)

    def delivered(self, stack_name: str, delivery: str) -> RunView | None:
        """The stack's run that the webhook delivery ``delivery`` started, if one did."""
        seen = self._records.of_delivery(stack_name, delivery)
        return None if seen is None else self.get(stack_name, seen)

    def promote(
        self, stack_name: str, to: str, from_stage: str | None = None, *, by: str = ""
    ) -> RunView:
        """A run that releases and deploys ``to`` with what the previous stage runs. Into a
        protected stage it waits at the gate for an approval, like any run."""
        names = self._records.promotion_stages(stack_name, to)
        index = names.index(to)
        expected = names[index - 1] if index else "latest"
        if from_stage is not None and from_stage != expected:
            raise UsageError(
                f"{to} promotes from {expected}, not {from_stage}",
                hint=f"stages run in the order {' -> '.join(names)}",
            )
        return self.start_run(
            stack_name, trigger=f"promote {expected} -> {to}", stages=[to], pushed_by=by
        )

    def resume_interrupted(self) -> int:
        """At start: carry on with every run a stopped platform left unfinished."""
        active = self._records.active()
        for run_id, stack_name in active:
            self._records.note(
                run_id, "the platform stopped during this run (INTERRUPTED); resuming"
            )
            self._launch(Runner(self._parts, stack_name, run_id, resumed=True))
        return len(active)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Wake every run at once; each leaves its records as they are for the next start."""
        self._stopping.set()
        with self._guard:
            live = list(self._live.values())
        for topic in {entry.topic for entry in live}:
            changes.notify(topic)
        for entry in live:
            entry.thread.join(timeout=timeout)

    def _launch(self, runner: Runner) -> None:
        def body() -> None:
            try:
                runner.run()
            finally:
                with self._guard:
                    self._live.pop(runner.run_id, None)

        thread = threading.Thread(
            target=body, name=f"run-{runner.stack}-{runner.run_id}", daemon=True
        )
        with self._guard:
            self._live[runner.run_id] = _Live(thread, runner.topic)
        thread.start()

    def _lock(self, stack_name: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((stack_name, name), threading.Lock())

    # -- reading and acting

    def recent(self, stack_name: str, limit: int = 20) -> list[RunView]:
        return self._records.recent(stack_name, limit)

    def get(self, stack_name: str, number: int) -> RunView:
        return self._records.get(stack_name, number)

    def approve(self, stack_name: str, stage: str, *, by: str) -> RunView:
        """Pass the approval gate where a run waits to enter ``stage``; it goes on at once.
        A four-eyes stage refuses the person who pushed the run (``AccessDenied``)."""
        protection = self._protection.get(stack_name, stage)
        number = self._records.approve(
            stack_name,
            stage,
            by=by,
            check=lambda run, pushed_by: four_eyes_refusal(protection, by, pushed_by, run),
        )
        changes.notify(self._records.topic(stack_name))
        return self.get(stack_name, number)

    def cancel(self, stack_name: str, number: int, *, by: str) -> RunView:
        """Stop a run between steps; a build or deployment already running finishes."""
        self._records.cancel(stack_name, number, by=by)
        changes.notify(self._records.topic(stack_name))
        return self.get(stack_name, number)
