"""The statuses of builds, pipeline runs and run steps, as the store keeps them.

Each is a ``StrEnum`` whose values are the strings stored and shown before, so the API,
the CLI and the rows did not change. Light on purpose: the CLI imports it without
loading the services.
"""

from __future__ import annotations

from enum import StrEnum


class BuildStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


BUILD_DONE = (BuildStatus.SUCCEEDED, BuildStatus.FAILED)


class RunStatus(StrEnum):
    QUEUED = "QUEUED"  # recorded, waiting for the stack's build
    RUNNING = "RUNNING"
    WAITING = "WAITING"  # at a gate, for an approval
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SUPERSEDED = "SUPERSEDED"  # a newer run took its place
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"  # no change touched build.paths
    INTERRUPTED = "INTERRUPTED"
    """Only in older stores: a run that waited at a gate when the platform stopped ended
    so (and was never resumed). A stop now leaves a run to resume at the next start."""


RUN_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
RUN_DONE = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.SUPERSEDED,
    RunStatus.CANCELLED,
    RunStatus.SKIPPED,
    RunStatus.INTERRUPTED,
)
RUN_STOPPED = (RunStatus.CANCELLED, RunStatus.SUPERSEDED)
"""Ended from outside the run (cancel, a newer run): its own end does not overwrite them."""


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"  # a gate, for an approval
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"


NOT_RUN = "NOT RUN"


def step_shown_status(status: str, started_at: object) -> str:
    """A run's step as people read it: one that the run's end cancelled before it began
    (the steps after a failed one) did not run, which is not a failure: ``NOT_RUN``.
    Any other step shows its status, a step cancelled at its gate or while it ran too."""
    if status == StepStatus.CANCELLED and started_at is None:
        return NOT_RUN
    return status


class ReleaseOrigin(StrEnum):
    """Where a release came from, as ``releases`` and the console show it."""

    PROMOTION = "promotion"  # what the previous stage runs (or ``latest``), by a run or by hand
    CHOSEN = "chosen"  # an image picked by commit, digest or tag (``release --commit …``)
    ROLLBACK = "rollback"  # a copy of an older release, by hand or by the controller
    VARIABLES = "variables"  # the running image with a new config (a variable change)
