"""``stackyard deploy``, ``rollback``, ``tasks``, ``check``, ``url`` and ``deployments``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stackyard.cli.builds import short
from stackyard.cli.client import ApiClient
from stackyard.cli.follow import follow_log
from stackyard.cli.output import console, err_console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import StackyardError, UsageError

Stage = Annotated[str, typer.Option("--stage", help="The stage, e.g. dev, staging or prod.")]
Detach = Annotated[bool, typer.Option("--detach", help="Request it and return.")]


def stage_path(stack: str, stage: str) -> str:
    return f"/api/v1/stacks/{stack}/stages/{stage}"


def progress_line(record: dict[str, Any]) -> str:
    return (
        f"deployment {record['number']} {record['status']}: "
        f"{record['tasks_started']} started, "
        f"{record['tasks_healthy']}/{record['desired']} healthy, "
        f"{record['tasks_routed']}/{record['desired']} routed, "
        f"{record['tasks_stopped']} stopped"
    )


def wait_for_deployment(
    client: ApiClient, stack: str, stage: str, record: dict[str, Any], json_output: bool
) -> dict[str, Any]:
    """Follow the deployment's log until it ends; raise when it FAILED."""
    screen = err_console if json_output else console
    base = f"{stage_path(stack, stage)}/deployments/{record['number']}"
    screen.print(f"Deploying release {record['release_number']} of {stack} to {stage}")
    follow_log(
        client,
        stack,
        "deployment",
        record["number"],
        stage=stage,
        on_line=lambda line: screen.print(escape(line), soft_wrap=True),
    )
    final: dict[str, Any] = client.get(base)
    screen.print(progress_line(final))
    if final["status"] != "COMPLETED":
        raise StackyardError(
            f"deployment {final['number']} of {stack} {stage} {final['status']}: {final['reason']}",
            hint=f"the stage went back to its last completed release; log: {final['log_path']}",
        )
    return final


def deploy(
    stack: str,
    stage: Annotated[
        str | None, typer.Option("--stage", help="Deploy this stage's newest (or given) release.")
    ] = None,
    release: Annotated[
        int | None, typer.Option("--release", help="With --stage: this release \\[the newest].")
    ] = None,
    commit: Annotated[
        str | None,
        typer.Option("--commit", help="Run the whole pipeline for this commit (sha, tag, branch)."),
    ] = None,
    detach: Detach = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Roll a stage out to a release, or (--commit, or no --stage) run the pipeline."""
    client = ApiClient.discover(settings_for(data_dir))
    if stage is None or commit is not None:
        if release is not None:
            raise UsageError("--release needs --stage (and no --commit)")
        from stackyard.cli.runs import wait_for_run

        run = client.request("POST", f"/api/v1/stacks/{stack}/runs", json={"commit": commit})
        if not detach:
            run = wait_for_run(client, stack, run, json_output)
        if json_output:
            print_json(run)
        return
    record = client.request(
        "POST", f"{stage_path(stack, stage)}/deployments", json={"release": release}
    )
    if not detach:
        record = wait_for_deployment(client, stack, stage, record, json_output)
    if json_output:
        print_json(record)


def rollback(
    stack: str,
    stage: Stage,
    to: Annotated[
        int | None, typer.Option("--to", help="The release to go back to \\[the previous one].")
    ] = None,
    detach: Detach = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Make a new release from an older one's digest AND config, and deploy it."""
    client = ApiClient.discover(settings_for(data_dir))
    record = client.request("POST", f"{stage_path(stack, stage)}/rollback", json={"to": to})
    if not detach:
        record = wait_for_deployment(client, stack, stage, record, json_output)
    if json_output:
        print_json(record)


def tasks(stack: str, stage: Stage, data_dir: DataDir = None, json_output: Json = False) -> None:
    """The stage's tasks: id, release, digest, address, state, health, age (and node)."""
    found = ApiClient.discover(settings_for(data_dir)).get(f"{stage_path(stack, stage)}/tasks")
    if json_output:
        print_json(found["tasks"])
        return
    nodes = any(task.get("node") for task in found["tasks"])
    columns = ["TASK", "RELEASE", "DIGEST", "ADDRESS", "STATE", "HEALTH", "AGE"]
    table = new_table(*columns, *(["NODE"] if nodes else []), box=None)
    for task in found["tasks"]:
        age = task["age_seconds"]
        row = [
            task["id"][:12],
            task["release"],
            short(task["digest"]),
            task["address"],
            task["state"],
            task["health"],
            f"{age:.0f}s" if age is not None else "-",
        ]
        if nodes:
            row.append(_node_text(task.get("node", ""), task.get("node_name", "")))
        table.add_row(*row)
    console.print(table)
    for task in found["tasks"]:  # what a moving task waits for, why one ended
        if task.get("error"):
            line = f"{task['id'][:12]} {task['state']}: {task['error']}"
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def _node_text(node: str, name: str) -> str:
    if not node:
        return "-"
    return f"{node[:12]} ({name})" if name else node[:12]


def check(stack: str, stage: Stage, data_dir: DataDir = None, json_output: Json = False) -> None:
    """The stage's digest against each task's digest: match or no_match."""
    found = ApiClient.discover(settings_for(data_dir)).get(f"{stage_path(stack, stage)}/check")
    if json_output:
        print_json(found)
        return
    console.print(
        f"{stage} ENV_DIGEST: {found['digest'] or '(no completed release)'}", highlight=False
    )
    for task in found["tasks"]:
        verdict = "match" if task["match"] else "no_match"
        node = task.get("node", "")
        on = f" on node {node[:12]} ({task.get('address', '')})" if node else ""
        console.print(f"TASK_DIGEST: {task['digest']} ({verdict}){on}", highlight=False)
    if not found["converged"]:
        err_console.print(
            f"not converged: {len(found['tasks'])} of {found['desired']} task(s) running"
            + (f"; deployment {found['deployment']}" if found["deployment"] else ""),
            highlight=False,
        )
    for line in found.get("waiting") or ():
        err_console.print(f"task {line}", markup=False, highlight=False, soft_wrap=True)


def url(stack: str, stage: Stage, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Where the stage is served."""
    found = ApiClient.discover(settings_for(data_dir)).get(f"{stage_path(stack, stage)}/url")
    if json_output:
        print_json(found)
    elif found["url"] is None:
        raise StackyardError(
            f"stage {stage} of {stack} is not served yet",
            hint=f"deploy it: stackyard deploy {stack} --stage {stage}",
        )
    else:
        console.print(found["url"], highlight=False)


def deployments(
    stack: str, stage: Stage, data_dir: DataDir = None, json_output: Json = False
) -> None:
    """The stage's deployments with rollout state and reason, newest first, and its latest
    events (tasks replaced outside a deployment, nodes lost)."""
    found = ApiClient.discover(settings_for(data_dir)).get(
        f"{stage_path(stack, stage)}/deployments"
    )
    if json_output:
        print_json(found["deployments"])
        return
    table = new_table("DEPLOYMENT", "RELEASE", "STATE", "TRIGGER", "DIGEST", "REASON", box=None)
    for record in found["deployments"]:
        table.add_row(
            str(record["number"]),
            str(record["release_number"]),
            record["status"],
            record["trigger"],
            short(record["digest"]),
            _cut(record["reason"], 120),
        )
    console.print(table)
    newest = found["deployments"][0] if found["deployments"] else None
    if newest is not None and len(newest["reason"]) > 120:
        # The reason of a failure ends with the app's last log lines: say it whole.
        console.print(
            f"\nDeployment {newest['number']} {newest['status']}: {newest['reason']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    events = found.get("events") or []
    if events:
        console.print("\nLatest events (tasks replaced outside a deployment, nodes lost):")
        listing = new_table("AT", "KIND", "MESSAGE", box=None)
        for event in events:
            listing.add_row(event["at"][:19].replace("T", " "), event["kind"], event["message"])
        console.print(listing)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    for command in (deploy, rollback, tasks, check, url, deployments):
        app.command()(command)
