"""``stackyard runs``, ``approve``, ``promote`` and ``cancel``: pipeline runs and their gates."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, print_json, real_console
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import StackyardError
from stackyard.statuses import NOT_RUN, RUN_DONE, RunStatus, StepStatus, step_shown_status

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

STYLE = {  # run and step statuses share their names
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.RUNNING: "yellow",
    RunStatus.WAITING: "magenta",
    RunStatus.QUEUED: "dim",
    StepStatus.PENDING: "dim",
    RunStatus.SKIPPED: "dim",
    RunStatus.CANCELLED: "red",
    RunStatus.SUPERSEDED: "dim",
    NOT_RUN: "dim",
}
MARK = {
    StepStatus.SUCCEEDED: "✓",
    StepStatus.FAILED: "✗",
    StepStatus.RUNNING: "…",
    StepStatus.WAITING: "⏸",
    StepStatus.PENDING: "·",
    StepStatus.SKIPPED: "-",
    StepStatus.CANCELLED: "✗",
    NOT_RUN: "-",
}
STOPS_FOLLOWING = (*RUN_DONE, RunStatus.WAITING)


def _step_text(step: dict[str, Any]) -> Text:
    from rich.text import Text

    status = step_shown_status(step["status"], step.get("started_at"))
    label = step["kind"] if step["kind"] != "gate" else f"gate ({step['message'] or 'auto'})"
    number = f" #{step['number']}" if step["number"] is not None else ""
    return Text(f"{MARK.get(status, '?')} {label}{number}", style=STYLE.get(status, ""))


def run_table(runs: list[dict[str, Any]]) -> Table:
    """One row per run; one column for the build and one per stage."""
    from rich.table import Table
    from rich.text import Text

    stages: list[str] = []
    for run in runs:
        for step in run["steps"]:
            if step["stage"] and step["stage"] not in stages:
                stages.append(step["stage"])
    table = Table(
        "RUN", "COMMIT", "TRIGGER", "STATUS", "BUILD", *(s.upper() for s in stages), box=None
    )
    for run in runs:
        cells: list[Text | str] = [
            str(run["number"]),
            run["commit_sha"][:12] or run["ref"],
            run["trigger"],
            Text(run["status"], style=STYLE.get(run["status"], "")),
        ]
        build = next((s for s in run["steps"] if s["kind"] == "build"), None)
        cells.append(_step_text(build) if build else "")
        for stage in stages:
            parts = [_step_text(s) for s in run["steps"] if s["stage"] == stage]
            cells.append(Text(" ").join(parts) if parts else Text(""))
        table.add_row(*cells)
    return table


def runs(
    stack: str,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the newest run live.")
    ] = False,
    limit: Annotated[int, typer.Option(help="How many runs to show.")] = 10,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Pipeline runs of a stack and each step's state, newest first."""
    client = ApiClient.discover(settings_for(data_dir))
    path = f"/api/v1/stacks/{stack}/runs"
    found = client.get(path, params={"limit": limit})["runs"]
    if json_output and not watch:
        print_json(found)
        return
    if not watch:
        console.print(run_table(found) if found else f"No runs of {stack} yet.")
        return
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    newest = found[0]["number"] if found else None
    with Live(console=real_console(console), refresh_per_second=4) as live:
        while True:
            found = client.get(path, params={"limit": limit})["runs"]
            current = next((r for r in found if r["number"] == newest), found[0] if found else None)
            errors = (
                [Text(f"run {current['number']}: {current['error']}", style="red")]
                if current and current["error"]
                else []
            )
            live.update(Group(run_table(found), *errors))
            if current is None or current["status"] in STOPS_FOLLOWING:
                break
            time.sleep(0.5)
    if not console.is_terminal:
        console.print()  # Live leaves the last table without a newline when piped
    if current is not None and current["status"] in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise StackyardError(
            f"run {current['number']} of {stack} {current['status']}: {current['error']}"
        )
    if json_output and current is not None:
        print_json(current)


def wait_for_run(
    client: ApiClient, stack: str, record: dict[str, Any], json_output: bool
) -> dict[str, Any]:
    """Show the run live until it ends or waits at a gate; raise when it failed."""
    path = f"/api/v1/stacks/{stack}/runs/{record['number']}"
    from rich.live import Live

    screen = err_console if json_output else console  # stdout stays pure JSON
    with Live(console=real_console(screen), refresh_per_second=4) as live:
        while True:
            record = client.get(path)
            live.update(run_table([record]))
            if record["status"] in STOPS_FOLLOWING:
                break
            time.sleep(0.5)
    if not screen.is_terminal:
        screen.print()  # Live leaves the last table without a newline when piped
    if record["status"] == RunStatus.WAITING:
        gate = next(s for s in record["steps"] if s["status"] == StepStatus.WAITING)
        screen.print(
            f"run {record['number']} waits for an approval to enter {gate['stage']}: "
            f"stackyard approve {stack} --stage {gate['stage']}"
        )
    elif record["status"] not in (RunStatus.SUCCEEDED, RunStatus.SKIPPED):
        raise StackyardError(
            f"run {record['number']} of {stack} {record['status']}: {record['error']}",
            hint=f"its log: {record['log_path']}",
        )
    return record


def approve(
    stack: str,
    stage: Annotated[str, typer.Option("--stage", help="The stage whose gate to pass.")],
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Pass the approval gate of a stage (promotion: approval) where a run waits."""
    client = ApiClient.discover(settings_for(data_dir))
    record = client.request("POST", f"/api/v1/stacks/{stack}/stages/{stage}/approve")
    if json_output:
        print_json(record)
        return
    console.print(f"Approved {stage} for run {record['number']} of {stack}.")


def promote(
    stack: str,
    to: Annotated[str, typer.Option("--to", help="The stage to promote to.")],
    source: Annotated[
        str | None, typer.Option("--from", help="The stage to promote from \\[the previous one].")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Start it and return.")] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Release and deploy a stage with what the previous stage runs (no rebuild)."""
    client = ApiClient.discover(settings_for(data_dir))
    record = client.request(
        "POST", f"/api/v1/stacks/{stack}/stages/{to}/promote", json={"source": source}
    )
    if not detach:
        record = wait_for_run(client, stack, record, json_output)
    if json_output:
        print_json(record)


def cancel(
    stack: str,
    run: Annotated[int, typer.Option("--run", help="The run number.")],
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Cancel a run between steps (a build or deployment already running finishes)."""
    client = ApiClient.discover(settings_for(data_dir))
    record = client.request("POST", f"/api/v1/stacks/{stack}/runs/{run}/cancel")
    if json_output:
        print_json(record)
    else:
        console.print(f"Run {run} of {stack} cancelled.")


def register(app: typer.Typer) -> None:
    for command in (runs, approve, promote, cancel):
        app.command()(command)
