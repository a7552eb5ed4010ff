"""``stackyard stages``: list a stack's stages at a glance; remove one that stackyard.yml no
longer lists."""

from __future__ import annotations

from typing import Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, new_table, print_json, print_left
from stackyard.cli.shared import (
    DataDir,
    Json,
    StackFirstGroup,
    Yes,
    confirm_by_name,
    settings_for,
)

app = typer.Typer(
    help="A stack's stages: list them at a glance; remove one that stackyard.yml no longer lists.",
    no_args_is_help=True,
    cls=StackFirstGroup,
)


@app.command("list")
def list_stages(stack: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Each stage in order: its target, release and digest, tasks (healthy of desired),
    newest deployment and URL."""
    found = ApiClient.discover(settings_for(data_dir)).get(f"/api/v1/stacks/{stack}/stages")
    if json_output:
        print_json(found)
    else:
        print_stages(found)


def print_stages(found: dict[str, Any]) -> None:
    """The stages table, and why task counts are missing when an engine did not answer."""
    if not found["stages"]:
        console.print("No stages yet: they come from stackyard.yml at the first build.")
        return
    table = new_table(
        "STAGE", "TARGET", "RELEASE", "DIGEST", "TASKS", "DEPLOYMENT", "URL", box=None
    )
    for stage in found["stages"]:
        deployment = "-"
        if stage["deployment"] is not None:
            deployment = f"#{stage['deployment']} {stage['deployment_status']}"
        table.add_row(
            stage["stage"],
            stage["target"],
            release_text(stage),
            (stage["digest"] or "-")[:19],
            f"{stage['healthy']}/{stage['desired']} healthy",
            deployment,
            stage["url"] or "-",
        )
    console.print(table)
    if found.get("engine_error"):
        err_console.print(f"task counts are missing: {found['engine_error']}", highlight=False)


def release_text(stage: dict[str, Any]) -> str:
    """The RELEASE cell: the current one, and a newer one that was never deployed."""
    shown = "-" if stage["release"] is None else str(stage["release"])
    waiting = stage.get("undeployed_release")
    return shown if waiting is None else f"{shown} ({waiting} not deployed)"


@app.command("remove")
def remove(
    stack: str,
    stage: str,
    yes: Yes = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Stop a stage that stackyard.yml no longer lists: its tasks and route go, its releases
    and deployments stay as history. A stage the file still lists is refused (remove it
    there and push first); a build that lists it again, released to it, brings it back."""
    if not yes:
        _confirm(stack, stage)
    client = ApiClient.discover(settings_for(data_dir))
    # No client timeout: a task's stop waits for its grace period, and an engine or router
    # that does not answer costs its retries (what is left goes later).
    answer = client.request("DELETE", f"/api/v1/stacks/{stack}/stages/{stage}", timeout=None)
    left = [str(item) for item in (answer or {}).get("left", [])]
    if json_output:
        print_json({"stack": stack, "stage": stage, "left": left})
        return
    console.print(f"Removed stage {stage} of {stack}: its tasks and route are gone.")
    print_left(left, left)  # a stage's leftovers are all tasks and routes


def _confirm(stack: str, stage: str) -> None:
    """Removing a stage stops what it serves: at a terminal, the user types its name."""
    confirm_by_name(
        stage,
        f"This stops stage {stage} of {stack}: its tasks and its route.",
        f"removing stage {stage} of {stack} stops its tasks and its route",
        f"stackyard stages remove {stack} {stage}",
    )
