"""The events a stack's channels can subscribe to, and the notice each one sends.

Pure: the builders take what the emitter already has in hand (a deployment's record, a
run's gate, a build's error) and return a ``Notice``, plain data the outbox stores as JSON.
Secrets are masked later, when the delivery worker makes the message: with every value any
of the stack's secrets ever had, and the channel's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from stackyard.channels.base import Severity
from stackyard.errors import UsageError


class EventKind(StrEnum):
    APPROVAL = "approval"  # a run waits for an approval to enter a stage
    COMPLETED = "completed"  # a deployment COMPLETED
    FAILED = "failed"  # a deployment FAILED and the stage did not go back
    ROLLED_BACK = "rolled-back"  # a deployment FAILED and the stage went back
    BUILD_FAILED = "build-failed"
    HEALED = "healed"  # self-healing replaced a task
    CERTIFICATE = "certificate"  # a certificate failed or expires soon (domains)
    TEST = "test"  # `stackyard notify test`: every channel gets it


SUBSCRIBABLE = tuple(kind for kind in EventKind if kind is not EventKind.TEST)

DESCRIPTIONS = {
    EventKind.APPROVAL: "a run waits for an approval (with the approve command and a link)",
    EventKind.COMPLETED: "a deployment completed",
    EventKind.FAILED: "a deployment failed and the stage could not go back",
    EventKind.ROLLED_BACK: "a deployment failed and was rolled back (reason, digest)",
    EventKind.BUILD_FAILED: "a build failed",
    EventKind.HEALED: "self-healing replaced a task (at most once per stage in 5 minutes)",
    EventKind.CERTIFICATE: "a certificate failed or is about to expire",
}


def parse_events(names: Iterable[str]) -> list[EventKind]:
    """Event names (each may be a comma list; ``all`` for every one), in the table's order."""
    wanted: set[EventKind] = set()
    for name in (part.strip() for item in names for part in item.split(",")):
        if not name:
            continue
        if name == "all":
            wanted.update(SUBSCRIBABLE)
            continue
        try:
            kind = EventKind(name)
        except ValueError:
            kind = None
        if kind is None or kind is EventKind.TEST:
            raise UsageError(
                f"--events: '{name}' is not an event",
                hint="events: " + ", ".join(SUBSCRIBABLE) + " (or all)",
            )
        wanted.add(kind)
    if not wanted:
        return list(SUBSCRIBABLE)
    return [kind for kind in SUBSCRIBABLE if kind in wanted]


@dataclass(frozen=True)
class Notice:
    """What one event says, before it is masked and addressed to a channel."""

    kind: EventKind
    stack: str
    stage: str
    title: str
    text: str
    fields: tuple[tuple[str, str], ...] = ()
    path: str = ""  # the console page, below the platform's URL
    severity: Severity = Severity.INFO

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "text": self.text,
            "fields": [list(field) for field in self.fields],
            "path": self.path,
            "severity": str(self.severity),
        }

    @classmethod
    def from_json(cls, kind: str, stack: str, stage: str, data: dict[str, Any]) -> Notice:
        return cls(
            kind=EventKind(kind),
            stack=stack,
            stage=stage,
            title=str(data.get("title", "")),
            text=str(data.get("text", "")),
            fields=tuple((str(k), str(v)) for k, v in data.get("fields", [])),
            path=str(data.get("path", "")),
            severity=Severity(data.get("severity", Severity.INFO)),
        )


def stack_page(stack: str) -> str:
    return f"/ui/stacks/{stack}"


def short(digest_or_sha: str) -> str:
    """A commit's first 12 characters; a digest stays whole (it is what `check` prints)."""
    return digest_or_sha if ":" in digest_or_sha else digest_or_sha[:12]


def approval_waiting(stack: str, stage: str, run: int, commit: str) -> Notice:
    command = f"stackyard approve {stack} --stage {stage}"
    return Notice(
        kind=EventKind.APPROVAL,
        stack=stack,
        stage=stage,
        title=f"{stack}: run {run} waits for an approval to enter {stage}",
        text=f"Approve it with `{command}`, or from the stack's page in the console.",
        fields=(
            ("Stack", stack),
            ("Stage", stage),
            ("Run", str(run)),
            ("Commit", short(commit) or "-"),
            ("Approve", command),
        ),
        path=stack_page(stack),
        severity=Severity.WAITING,
    )


@dataclass(frozen=True)
class DeploymentFacts:
    """A deployment as its record has it when it ends."""

    stack: str
    stage: str
    number: int
    release: int
    digest: str
    trigger: str
    reason: str = ""

    def fields(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Stack", self.stack),
            ("Stage", self.stage),
            ("Deployment", str(self.number)),
            ("Release", str(self.release)),
            ("Digest", self.digest),
            ("Trigger", self.trigger or "-"),
        )

    def log_command(self) -> str:
        return f"stackyard logs {self.stack} --deployment {self.number} --stage {self.stage}"


def deployment_completed(deployment: DeploymentFacts) -> Notice:
    d = deployment
    return Notice(
        kind=EventKind.COMPLETED,
        stack=d.stack,
        stage=d.stage,
        title=f"{d.stack}/{d.stage}: deployment {d.number} COMPLETED",
        text=f"Release {d.release} serves {d.stage}: {d.digest}.",
        fields=d.fields(),
        path=stack_page(d.stack),
        severity=Severity.GOOD,
    )


def deployment_failed(deployment: DeploymentFacts, outcome: str) -> Notice:
    """A FAILED deployment the stage did not go back from; ``outcome`` says why not."""
    d = deployment
    return Notice(
        kind=EventKind.FAILED,
        stack=d.stack,
        stage=d.stage,
        title=f"{d.stack}/{d.stage}: deployment {d.number} FAILED",
        text=d.reason,
        fields=(*d.fields(), ("Rollback", outcome), ("Log", d.log_command())),
        path=stack_page(d.stack),
        severity=Severity.BAD,
    )


def rolled_back(deployment: DeploymentFacts, *, to: int, digest: str, release: int) -> Notice:
    """A FAILED deployment, and the new ``release`` that copies release ``to`` (``digest``
    and its config), which the stage now deploys."""
    d = deployment
    return Notice(
        kind=EventKind.ROLLED_BACK,
        stack=d.stack,
        stage=d.stage,
        title=f"{d.stack}/{d.stage}: deployment {d.number} FAILED; rolled back to release {to}",
        text=d.reason,
        fields=(
            *d.fields(),
            ("Back to release", str(to)),
            ("Back to digest", digest),
            ("New release", str(release)),
            ("Log", d.log_command()),
        ),
        path=stack_page(d.stack),
        severity=Severity.BAD,
    )


def build_failed(stack: str, build: int, commit: str, error: str) -> Notice:
    return Notice(
        kind=EventKind.BUILD_FAILED,
        stack=stack,
        stage="",
        title=f"{stack}: build {build} FAILED",
        text=error,
        fields=(
            ("Stack", stack),
            ("Build", str(build)),
            ("Commit", short(commit) or "-"),
            ("Log", f"stackyard logs {stack} --build {build}"),
        ),
        path=stack_page(stack),
        severity=Severity.BAD,
    )


def task_replaced(stack: str, stage: str, reason: str) -> Notice:
    return Notice(
        kind=EventKind.HEALED,
        stack=stack,
        stage=stage,
        title=f"{stack}/{stage}: self-healing replaced a task",
        text=reason,
        fields=(
            ("Stack", stack),
            ("Stage", stage),
            ("Tasks", f"stackyard tasks {stack} --stage {stage}"),
        ),
        path=stack_page(stack),
        severity=Severity.INFO,
    )


def certificate_problem(
    stack: str,
    stage: str,
    domain: str,
    problem: str,
    expires: datetime | None = None,
    hint: str = "",
) -> Notice:
    """A certificate that could not be obtained or renewed (``problem``, with what to check
    in ``hint``), or that expires at ``expires``. deploy/certwatch.py emits it."""
    fields = [("Stack", stack), ("Stage", stage), ("Domain", domain)]
    if expires is not None:
        fields.append(("Expires", expires.isoformat(timespec="minutes")))
    return Notice(
        kind=EventKind.CERTIFICATE,
        stack=stack,
        stage=stage,
        title=f"{stack}/{stage}: certificate of {domain}: {problem}",
        text=f"{problem}\n{hint}" if hint else problem,
        fields=tuple(fields),
        path=stack_page(stack),
        severity=Severity.BAD,
    )


def trial_notice(stack: str) -> Notice:
    return Notice(
        kind=EventKind.TEST,
        stack=stack,
        stage="",
        title=f"{stack}: a test notification from Stackyard",
        text="This channel receives the stack's notifications.",
        fields=(("Stack", stack),),
        path=stack_page(stack),
        severity=Severity.INFO,
    )
