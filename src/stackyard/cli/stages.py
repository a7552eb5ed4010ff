"""``stackyard stages remove``: stop a stage that stackyard.yml no longer lists."""

from __future__ import annotations

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, print_json, print_left
from stackyard.cli.shared import DataDir, Json, Yes, confirm_by_name, settings_for

app = typer.Typer(help="A stack's stages: remove one that stackyard.yml no longer lists.")


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
