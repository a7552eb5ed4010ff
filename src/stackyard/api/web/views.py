"""What each console page shows, gathered from the services (the grid: ``deploy.overview``).

The routes in ``pages.py`` and ``actions.py`` call these; each returns a plain dict for a
template, so a page and its live fragment render from the same data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from stackyard.access.rules import Action, Need, Principal, StageFrom, Target, decide
from stackyard.deploy.overview import Overview
from stackyard.errors import StackyardError
from stackyard.pipeline.runs import RunView, StepView
from stackyard.pipeline.services import Services
from stackyard.pipeline.variables import ChangeView

RELEASES_PER_STAGE = 5
RUNS_SHOWN = 10
LOG_KINDS = ("build", "release", "deployment", "run")


def services(request: Request) -> Services:
    found: Services = request.app.state.context.services
    return found


def permits(request: Request, stack: str | None) -> Callable[..., bool]:
    """``can(action, stage=None, gate=False, every=False)`` for the page's templates: whether
    the person may take an action, by the same rule the action's route checks. A page
    offers only what ``can`` allows; the routes refuse the rest anyway."""
    principal: Principal = request.state.principal
    protections = services(request).protection.of_stack(stack) if stack else {}

    def can(action: str, stage: str | None = None, gate: bool = False, every: bool = False) -> bool:
        need = Need(
            Action(action),
            stack="name" if stack else None,
            stage=StageFrom.PATH if stage else StageFrom.NONE,
            gate=gate,
        )
        target = Target(stack, (stage,) if stage else (), every_stage=every)
        return decide(principal, need, target, protections).allowed

    return can


def stacks_overview(request: Request, only: str | None = None) -> Overview:
    """Stacks and their stage cells, with the task health ``stackyard tasks`` shows."""
    return services(request).deploy.overview(only)


def disk_context(request: Request) -> dict[str, Any]:
    """The data directory's parts now, and the last retention run's before and after."""
    retention = services(request).retention
    last = retention.last_report()
    rows = []
    if last is not None:
        before, after = last.get("before", {}), last.get("after", {})
        rows = [(part, before[part], after.get(part, 0)) for part in before]
    return {
        "parts": retention.disk_use(engine=False),
        "keep_releases": retention.keep_releases,
        "last": last,
        "rows": rows,
        "freed": sum(b - a for _, b, a in rows),
    }


def waiting_gates(steps: Iterable[tuple[str, str, str]]) -> set[str]:
    """The stages whose gate a run waits at, from (kind, stage, status) of run steps."""
    return {stage for kind, stage, status in steps if kind == "gate" and status == "WAITING"}


def step_log_url(stack: str, step: StepView) -> str | None:
    """The console page of a step's own log (a gate has none)."""
    kind = {"build": "build", "release": "release", "deploy": "deployment"}.get(step.kind)
    if kind is None or step.number is None:
        return None
    query: dict[str, str | int] = {"kind": kind, "number": step.number}
    if step.stage:
        query["stage"] = step.stage
    return f"/ui/stacks/{stack}/logs?{urlencode(query)}"


def run_log_url(run: RunView) -> str:
    return f"/ui/stacks/{run.stack}/logs?{urlencode({'kind': 'run', 'number': run.number})}"


def stack_context(request: Request, name: str) -> dict[str, Any]:
    """The stack page: stage cells, recent runs with their steps, releases per stage."""
    found = services(request)
    stack = found.stacks.get(name)
    view = stacks_overview(request, only=name)
    row = view.stacks[0]
    runs = found.runs.recent(name, limit=RUNS_SHOWN)
    gates = waiting_gates((s.kind, s.stage, s.status) for run in runs for s in run.steps)
    releases: dict[str, list[Any]] = defaultdict(list)
    for release in found.releases.list(name):
        if len(releases[release.stage]) < RELEASES_PER_STAGE:
            releases[release.stage].append(release)
    names = [cell.stage for cell in row.stages]
    previous = {stage: (names[i - 1] if i else "latest") for i, stage in enumerate(names)}
    return {
        "stack": stack,
        "row": row,
        "engine_error": view.engine_error,
        "runs": runs,
        "gates": gates,
        "releases": releases,
        "previous": previous,
        "step_log_url": step_log_url,
        "run_log_url": run_log_url,
        "can": permits(request, name),
    }


@dataclass(frozen=True)
class Scope:
    """Where a variable or secret applies: the build, every stage, or one stage."""

    stage: str | None
    build: bool

    @classmethod
    def parse(cls, text: str) -> Scope:
        if text == "build":
            return cls(None, True)
        if text == "stack":
            return cls(None, False)
        if text.startswith("stage:") and text[6:]:
            return cls(text[6:], False)
        raise StackyardError(
            f"unknown scope '{text}'", hint="use build, stack or stage:NAME (the page's form)"
        )

    def text(self) -> str:
        if self.build:
            return "build variables"
        return f"stage {self.stage}" if self.stage else "every stage"


def variables_context(request: Request, name: str) -> dict[str, Any]:
    """The variables page: build variables, runtime ones per scope, secrets (no values)."""
    found = services(request)
    stack = found.stacks.get(name)
    stages = [cell.stage for cell in stacks_overview(request, only=name).stacks[0].stages]
    variables = found.variables.list_variables(name).variables
    secrets = found.variables.list_secrets(name).secrets
    runtime: dict[str, list[Any]] = defaultdict(list)
    for variable in variables:
        if variable.kind == "runtime":
            runtime[f"stage:{variable.stage}" if variable.stage else "stack"].append(variable)
    by_scope: dict[str, list[Any]] = defaultdict(list)
    for secret in secrets:
        by_scope[f"stage:{secret.stage}" if secret.stage else "stack"].append(secret)
    scopes = [("stack", "every stage")] + [(f"stage:{s}", f"stage {s}") for s in stages]
    return {
        "stack": stack,
        "stages": stages,
        "scopes": scopes,
        "build_variables": [v for v in variables if v.kind == "build"],
        "runtime": runtime,
        "secrets": by_scope,
        "can": permits(request, name),
    }


def nodes_context(request: Request, target: str = "local") -> dict[str, Any]:
    """The nodes page: each node of the platform's engine (or of a swarm target's) with what
    it runs (every task, and this platform's); None on an engine without nodes."""
    found = services(request)
    if target == "local" and not found.controller.engine.supports_nodes:
        return {"nodes": None, "target": target}
    return {"nodes": found.nodes.list(target), "target": target}


def targets_context(request: Request) -> dict[str, Any]:
    """The targets page: every target (``local`` first) with its node count and stages,
    and the registries a new target may pull from."""
    found = services(request)
    return {
        "targets": found.targets.list(),
        "registries": ["local", *(r.name for r in found.registries.list())],
    }


def audit_context(
    request: Request,
    stack: str | None,
    user: str | None,
    action: str | None,
    since: str | None,
) -> dict[str, Any]:
    """The audit page: entries newest first, with the filters of `stackyard audit`."""
    filters = {"stack": stack, "user": user, "action": action, "since": since}
    found = services(request).audit.query(
        stack=stack or None, actor=user or None, action=action or None, since=since or None
    )
    return {"entries": found.entries, "filters": {k: v or "" for k, v in filters.items()}}


def describe_change(change: ChangeView, scope: Scope) -> list[str]:
    """What a variable or secret change did, in sentences; never a value."""
    what = "secret" if change.kind == "secret" else f"{change.kind} variable"
    lines = [
        f"Changed {what} {', '.join(change.changed)} ({scope.text()})."
        if change.changed
        else f"Nothing changed ({scope.text()}): the {what} already had that value."
    ]
    for done in change.redeployed:
        lines.append(
            f"Redeployed {done.stage}: release {done.release}, deployment {done.deployment}."
        )
    for problem in change.not_redeployed:
        lines.append(f"Not redeployed {problem.stage}: {problem.error}")
    if change.rebuild:
        lines.append(f"Rebuilding: {change.rebuild} started.")
    return lines


CHART_WIDTH, CHART_HEIGHT = 600, 80  # the traffic chart's SVG box


def domains_context(request: Request, name: str, minutes: int) -> dict[str, Any]:
    """The stack's host names with their certificates, and each served stage's traffic:
    a bar per minute (requests, the 5xx part on top) and the table of `stackyard traffic`.
    Bars are SVG rectangles: the console's CSP allows no inline style."""
    found = services(request)
    domains = found.deploy.domains(name).domains
    report = found.deploy.traffic(name, None, minutes)
    start = int(report.since.timestamp() // 60)
    stages = []
    for each in report.stages:
        per_minute: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for row in each.minutes:
            bucket = per_minute[int(row.minute.timestamp() // 60) - start]
            bucket[0] += row.requests
            bucket[1] += row.errors
        peak = max((n for n, _ in per_minute.values()), default=0)
        step = CHART_WIDTH / (minutes + 1)
        bars = [
            {
                "x": round(index * step, 1),
                "width": round(max(step - 1, 1), 1),
                "height": round(CHART_HEIGHT * requests / peak, 1),
                "errors": round(CHART_HEIGHT * errors / peak, 1),
                "title": f"{requests} requests, {errors} 5xx",
            }
            for index, (requests, errors) in sorted(per_minute.items())
            if peak and 0 <= index <= minutes
        ]
        stages.append({"stage": each.stage, "minutes": each.minutes, "bars": bars, "peak": peak})
    return {
        "stack_name": name,
        "domains": domains,
        "stages": stages,
        "minutes": minutes,
        "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
    }
