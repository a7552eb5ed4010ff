"""One stage's control loop: observe, decide, execute, on its own thread, and only when needed.

A step runs when something changed: the API recorded a deployment (``nudge``), the task
watch saw the stage's tasks change, or the health scheduler changed a judgement. While a
deployment is active, or right after a step that acted, it looks again every ``tick``; a
drain under way brings it back when the drain ends. A settled stage sleeps until woken,
with one slow safety step (``safety_tick``, 5 minutes) in case a change went unseen. A step that
fails is retried with a growing pause; a deployment fails when retrying cannot help.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from stackyard import changes
from stackyard.deploy import records
from stackyard.deploy.decide import DeploymentStatus, StageMemory, decide
from stackyard.deploy.deploylog import StageLog
from stackyard.deploy.execute import Executor
from stackyard.deploy.keys import StageKey
from stackyard.deploy.observe import StageObserver
from stackyard.deploy.plan import TaskHealth
from stackyard.errors import PermanentError, RetryableError, is_retryable
from stackyard.store.models import Stack

log = logging.getLogger("stackyard.deploy.controller")

# A deployment whose every step fails (engine or router unreachable) fails after this long.
ERROR_BUDGET = 30.0
LONGEST_RETRY = 5.0


@dataclass(frozen=True)
class Pace:
    """How often a stage loop looks, in seconds (ControllerSettings carries them)."""

    tick: float = 0.1  # while a deployment is active, or after a step that acted
    retry: float = 1.0  # after a failed step, times the failures in a row (at most 5 s)
    safety_tick: float = 300.0  # a settled stage, in case a change went unseen


class StageLoop:
    """Drives one stage toward its release; ``tick`` is one observe-decide-execute step."""

    def __init__(
        self,
        key: StageKey,
        *,
        observer: StageObserver,
        executor: Executor,
        stage_log: StageLog,
        sessions: sessionmaker[Session],
        pace: Pace,
        on_stop: Callable[[StageKey], None] = lambda _key: None,
    ) -> None:
        self.key = key
        self.memory = StageMemory()
        self.health: dict[str, TaskHealth] = {}  # as last judged, for the API
        self._observer = observer
        self._executor = executor
        self._log = stage_log
        self._sessions = sessions
        self._pace = pace
        self._on_stop = on_stop
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stops_failed: set[str] = set()  # filled by the stop pool, read by the loop
        self._stops_lock = threading.Lock()
        self._failures = 0  # steps failed in a row, to back off
        self._failing_since: float | None = None
        self._next_wait: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"stage-{key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._on_stop(self.key)

    def nudge(self) -> None:
        self._wake.set()

    def stop_failed(self, task_id: str) -> None:
        """A stop sent to the task failed (called from the stop pool): the next step may
        send it again."""
        with self._stops_lock:
            self._stops_failed.add(task_id)
        self.nudge()

    # -- the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug in a step must not end the stage's loop
                log.exception("stage %s: the step failed unexpectedly; retrying", self.key)
                self._failures += 1
                self._next_wait = self._backoff()
            self._wake.wait(self._next_wait)
            self._wake.clear()

    def run_once(self) -> bool:
        """One step as the thread runs it: True while it should look again soon. An error
        is recorded on the active deployment, and fails it when retrying cannot help
        (an error that is not retryable, or failing for ERROR_BUDGET seconds)."""
        try:
            busy = self.tick()
        except Exception as exc:  # the step is retried; the error is logged and recorded
            self._failures += 1
            self._failing_since = self._failing_since or time.monotonic()
            log.warning("stage %s: step failed (%s): %s", self.key, type(exc).__name__, exc)
            give_up = not is_retryable(exc) or (
                time.monotonic() - self._failing_since > ERROR_BUDGET
            )
            self.note_error(exc, give_up=give_up)
            self._next_wait = self._backoff()
            return False
        self._failures, self._failing_since = 0, None
        return busy

    def _backoff(self) -> float:
        return min(self._pace.retry * (1 + self._failures), LONGEST_RETRY)

    def tick(self) -> bool:
        """Observe, decide, execute once; True while the stage should be looked at soon."""
        with self._stops_lock:
            failed, self._stops_failed = self._stops_failed, set()
        if failed:
            self.memory = replace(self.memory, stopping=self.memory.stopping - failed)
        view = self._observer.observe(self.memory, time.monotonic())
        self.health = {t.id: t.health for t in view.tasks}
        plan = decide(view)
        if not self._executor.apply(view, plan, self):
            self._next_wait = 0.0  # its deployment was superseded meanwhile: look again
            return True
        blocked = plan.blocked
        if blocked is not None:
            error = PermanentError if blocked.permanent else RetryableError
            raise error(blocked.message, hint=blocked.hint or None)
        if plan.busy:
            self._next_wait = self._pace.tick
        else:
            safety = self._pace.safety_tick * random.uniform(1.0, 1.1)  # not all at once
            self._next_wait = min(plan.wait, safety) if plan.wait is not None else safety
        return plan.busy

    # -- a step that failed

    def note_error(self, exc: Exception, *, give_up: bool) -> None:
        """Record the error on the IN_PROGRESS deployment; fail it if retrying cannot help.

        If the store cannot take it, that is logged and the next step tries again; if the
        deployment's log cannot be written, the deployment is FAILED all the same, and
        the log says why it lacks its last line.
        """
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", None)
        if hint:
            message += f" ({hint})"
        try:
            log_path = self._record_error(message, give_up=give_up)
        except SQLAlchemyError as store_error:
            log.error(
                "stage %s: cannot record on its deployment that a step failed (%s): %s; "
                "the next step tries again",
                self.key,
                message,
                store_error,
            )
            return
        if log_path is None:
            return
        self.memory = replace(self.memory, deployment=None)
        try:
            self._log.write(log_path, f"deployment FAILED: {message}")
        except OSError as write_error:
            log.error(
                "stage %s: deployment FAILED (%s); its log %s could not be written: %s",
                self.key,
                message,
                log_path,
                write_error,
            )
        changes.end(log_path)

    def _record_error(self, message: str, *, give_up: bool) -> str | None:
        """The deployment's log path when it was failed now; None otherwise."""
        with self._sessions.begin() as session:
            stack = session.scalar(select(Stack).where(Stack.name == self.key.stack))
            if stack is None:
                return None
            row = records.active(session, stack.id, self.key.stage)
            if row is None or row.status != DeploymentStatus.IN_PROGRESS:
                return None
            if not give_up:
                row.reason = f"retrying: {message}"
                return None
            row.status, row.reason = DeploymentStatus.FAILED, message
            row.finished_at = datetime.now(UTC)
            return row.log_path
