"""Polling: start a pipeline run when a polled stack's branch moves in its remote.

A fallback for remotes that cannot send webhooks. `Services` starts one `Poller` thread
with the platform; each stack with ``poll_seconds`` > 0 is asked ``git ls-remote`` (through
the `Source` seam) that often. The last sha seen is stored on the stack, so a restart does
not start the same run again; webhooks record what they started there too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from stackyard.errors import StackyardError
from stackyard.pipeline.runs import RunView
from stackyard.source.base import Source
from stackyard.store.models import PipelineRun, Stack

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
"""How often the poller looks for stacks that are due; each has its own interval."""


class RunStarter(Protocol):
    """What triggers need of the pipeline: `PipelineService.start_run`."""

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
    ) -> RunView: ...


@dataclass(frozen=True)
class PolledStack:
    name: str
    repo: str
    branch: str
    poll_seconds: int
    last_seen: str | None
    """The sha polling (or a webhook) last recorded; None before the first poll."""
    last_run: str | None = None
    """The commit of the stack's newest pipeline run, whatever started it."""

    @property
    def baseline(self) -> str | None:
        return self.last_seen or self.last_run


def due(stacks: list[PolledStack], next_check: dict[str, float], now: float) -> list[PolledStack]:
    """The stacks whose next check time has come; a stack never checked is due at once."""
    return [stack for stack in stacks if next_check.get(stack.name, now) <= now]


def new_commit(stack: PolledStack, head: str | None) -> str | None:
    """The sha to start a run for, or None: the branch is gone, or has not moved.

    A stack polled for the first time starts a run for its branch's tip (as Jenkins' SCM
    polling does), unless its newest run was of that very commit.
    """
    if head is None or head == stack.baseline:
        return None
    return head


class Poller:
    """One background thread that checks every due polled stack, one after the other."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        source: Source,
        runs: RunStarter,
        *,
        tick: float = TICK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._source = source
        self._runs = runs
        self._tick = tick
        self._clock = clock
        self._next_check: dict[str, float] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="stackyard-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def poll_due(self) -> list[RunView]:
        """Check each stack that is due now; return the runs started."""
        now = self._clock()
        polled = self.polled_stacks()
        self._next_check = {
            name: at
            for name, at in self._next_check.items()
            if name in {stack.name for stack in polled}
        }
        started = []
        for stack in due(polled, self._next_check, now):
            self._next_check[stack.name] = now + stack.poll_seconds
            run = self.check(stack)
            if run is not None:
                started.append(run)
        return started

    def check(self, stack: PolledStack) -> RunView | None:
        """Ask the remote for the branch tip; start a run if it moved since last seen."""
        try:
            head = self._source.head(stack.repo, stack.branch)
        except StackyardError as exc:
            log.warning("polling %s: %s (tried again in %d s)", stack.name, exc, stack.poll_seconds)
            return None
        sha = new_commit(stack, head)
        if sha is None:
            if head is None:
                log.warning("polling %s: branch %s is not in its remote", stack.name, stack.branch)
            elif stack.last_seen is None:
                self._claim(stack.name, None, head)  # first poll, tip already run
            return None
        # Claim the sha first: a webhook for the same commit may be recording it right now.
        if not self._claim(stack.name, stack.last_seen, sha):
            return None
        try:
            run = self._runs.start_run(
                stack.name, trigger="poll", ref=stack.branch, commit=sha, before=stack.baseline
            )
        except StackyardError as exc:
            if exc.retryable:  # the next interval tries this commit again
                self._claim(stack.name, sha, stack.last_seen)
                log.warning("polling %s: could not start a run for %s: %s",
                            stack.name, sha[:7], exc)  # fmt: skip
            else:  # a broken stack: keep the claim, or every interval would fail again
                log.error("polling %s: no run for %s: %s", stack.name, sha[:7], exc)
            return None
        except BaseException:
            self._claim(stack.name, sha, stack.last_seen)
            raise
        log.info("polling %s: %s is at %s, run %d", stack.name, stack.branch, sha[:7], run.number)
        return run

    def polled_stacks(self) -> list[PolledStack]:
        with self._sessions() as session:
            rows = session.scalars(select(Stack).where(Stack.poll_seconds > 0).order_by(Stack.name))
            return [
                PolledStack(
                    row.name,
                    row.repo,
                    row.branch,
                    row.poll_seconds,
                    row.poll_last_seen,
                    None if row.poll_last_seen else _last_run_commit(session, row.id),
                )
                for row in rows
            ]

    def mark_seen(self, stack: str, sha: str) -> None:
        """Record that a run was started for ``sha`` (by a webhook), so polling skips it."""
        with self._sessions.begin() as session:
            session.execute(
                update(Stack)
                .where(Stack.name == stack)
                .values(poll_last_seen=sha, updated_at=Stack.updated_at)
            )

    def _claim(self, stack: str, expected: str | None, sha: str | None) -> bool:
        """Set the last seen sha if it is still ``expected``; False if someone else moved it."""
        seen = Stack.poll_last_seen
        with self._sessions.begin() as session:
            result = session.execute(
                update(Stack)
                .where(Stack.name == stack)
                .where(seen.is_(None) if expected is None else seen == expected)
                .values(poll_last_seen=sha, updated_at=Stack.updated_at)
            )
            return bool(getattr(result, "rowcount", 0))

    def _loop(self) -> None:
        while not self._stopping.wait(self._tick):
            try:
                self.poll_due()
            except Exception:
                # The thread outlives one bad pass (a locked database, a bug in one stack);
                # the error is logged with its traceback, and the next tick tries again.
                log.exception("polling failed; trying again in %g s", self._tick)


def _last_run_commit(session: Session, stack_id: int) -> str | None:
    sha = session.scalar(
        select(PipelineRun.commit_sha)
        .where(PipelineRun.stack_id == stack_id)
        .order_by(PipelineRun.number.desc())
        .limit(1)
    )
    return sha or None
