"""``stackyard stages remove``: stop a stage that stackyard.yml no longer lists."""

from __future__ import annotations

import sys

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, print_json
from stackyard.cli.shared import DataDir, Json, Yes, settings_for
from stackyard.errors import UsageError

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
    for item in left:
        console.print(f"Left {item}", markup=False, highlight=False)
    if left:
        console.print(
            "The platform removes the tasks and routes left once their engine or router "
            "answers (`stackyard doctor` lists the tasks meanwhile)."
        )


def _confirm(stack: str, stage: str) -> None:
    """Removing a stage stops what it serves: at a terminal, the user types its name."""
    if not sys.stdin.isatty():
        raise UsageError(
            f"removing stage {stage} of {stack} stops its tasks and its route, and there is "
            "no terminal to confirm at",
            hint=f"confirm with: stackyard stages remove {stack} {stage} --yes",
        )
    typed = typer.prompt(
        f"This stops stage {stage} of {stack}: its tasks and its route.\n"
        "Type the stage's name to confirm"
    )
    if typed.strip() != stage:
        raise UsageError(f"'{typed.strip()}' is not '{stage}': nothing was removed")
