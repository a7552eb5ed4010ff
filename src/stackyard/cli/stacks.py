"""``stackyard stacks``: create, list, show, update and delete stacks through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, new_table, print_json, print_left
from stackyard.cli.shared import DataDir, Json, StackFirstGroup, Yes, confirm_by_name, settings_for
from stackyard.cli.stages import print_stages
from stackyard.config.repos import URL_FORM

app = typer.Typer(
    help="Create, list, show, update and delete stacks.", no_args_is_help=True, cls=StackFirstGroup
)

Repo = Annotated[str | None, typer.Option("--repo", help="A local repository path or a git URL.")]
Branch = Annotated[str | None, typer.Option("--branch", help="The branch to build \\[main].")]
Context = Annotated[
    str | None, typer.Option("--context", help="Build context directory in the repo \\[.].")
]
Dockerfile = Annotated[
    str | None, typer.Option("--dockerfile", help="Dockerfile path in the context \\[Dockerfile].")
]
Registry = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="Push the stack's images to this outside registry (`stackyard registries`); "
        "'local' for the platform's own. Only before the stack's first release.",
    ),
]
Poll = Annotated[
    int | None,
    typer.Option(
        "--poll",
        metavar="SECONDS",
        help="Poll the repo's branch this often and run on a new commit; 0 = off \\[0, min 10].",
    ),
]


def absolute_repo(repo: str | None) -> str | None:
    """Local paths are sent to the API as absolute paths; URLs as they are."""
    if repo is None or URL_FORM.match(repo):
        return repo
    return str(Path(repo).expanduser().resolve())


def _body(
    repo: str | None,
    branch: str | None,
    context: str | None,
    dockerfile: str | None,
    poll: int | None = None,
    registry: str | None = None,
) -> dict[str, Any]:
    fields = {
        "repo": absolute_repo(repo),
        "branch": branch,
        "context_dir": context,
        "dockerfile": dockerfile,
        "poll_seconds": poll,
        "registry": registry,
    }
    return {k: v for k, v in fields.items() if v is not None}


def show_stack(stack: dict[str, Any]) -> None:
    console.print(f"[bold]{stack['name']}[/]")
    console.print(f"  repo        {stack['repo']}")
    console.print(f"  branch      {stack['branch']}")
    console.print(f"  context     {stack['context_dir']}")
    console.print(f"  dockerfile  {stack['dockerfile']}")
    if stack.get("poll_seconds"):
        console.print(f"  poll        every {stack['poll_seconds']} s")
    console.print(f"  registry    {stack.get('registry') or 'local'}")


@app.command("create")
def create(
    name: str,
    repo: Repo = None,
    branch: Branch = None,
    context: Context = None,
    dockerfile: Dockerfile = None,
    registry: Registry = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Create a stack bound to a git repository and branch."""
    client = ApiClient.discover(settings_for(data_dir))
    body = _body(repo, branch, context, dockerfile, registry=registry)
    stack = client.request("POST", "/api/v1/stacks", json={"name": name, **body})
    if json_output:
        print_json(stack)
        return
    console.print(f"Created stack [bold]{name}[/].")
    show_stack(stack)


@app.command("list")
def list_stacks(data_dir: DataDir = None, json_output: Json = False) -> None:
    """List stacks."""
    stacks = ApiClient.discover(settings_for(data_dir)).get("/api/v1/stacks")["stacks"]
    if json_output:
        print_json(stacks)
        return
    if not stacks:
        console.print("No stacks yet. Create one with `stackyard stacks create NAME --repo PATH`.")
        return
    table = new_table("NAME", "REPO", "BRANCH", "CONTEXT", "DOCKERFILE", "REGISTRY", box=None)
    for stack in stacks:
        table.add_row(
            stack["name"],
            stack["repo"],
            stack["branch"],
            stack["context_dir"],
            stack["dockerfile"],
            stack.get("registry") or "local",
        )
    console.print(table)


@app.command("show")
def show(name: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Show one stack, and its stages at a glance (JSON: the stack; `stages list --json`:
    its stages)."""
    client = ApiClient.discover(settings_for(data_dir))
    stack = client.get(f"/api/v1/stacks/{name}")
    if json_output:
        print_json(stack)
        return
    show_stack(stack)
    console.print()
    print_stages(client.get(f"/api/v1/stacks/{name}/stages"))


@app.command("update")
def update(
    name: str,
    repo: Repo = None,
    branch: Branch = None,
    context: Context = None,
    dockerfile: Dockerfile = None,
    poll: Poll = None,
    registry: Registry = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Change a stack's repo, branch, context, Dockerfile path, polling interval or
    registry."""
    client = ApiClient.discover(settings_for(data_dir))
    body = _body(repo, branch, context, dockerfile, poll, registry)
    stack = client.request("PATCH", f"/api/v1/stacks/{name}", json=body)
    if json_output:
        print_json(stack)
    else:
        show_stack(stack)


@app.command("delete")
def delete(
    name: str,
    yes: Yes = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Delete a stack: its records, tasks, routes, git remote, and its images in the engine,
    the registry and the registries of targets its stages ran on; prints what was left."""
    if not yes:
        _confirm_delete(name)
    # No client timeout: each step of a deletion is bounded on its own (a router or engine
    # that does not answer costs its retries), and together they may take more than 30 s.
    client = ApiClient.discover(settings_for(data_dir))
    answer = client.request("DELETE", f"/api/v1/stacks/{name}", timeout=None)
    left = [str(item) for item in (answer or {}).get("left", [])]
    later = [str(item) for item in (answer or {}).get("removed_later", [])]
    if json_output:
        print_json({"deleted": name, "left": left, "removed_later": later})
        return
    console.print(f"Deleted stack {name}.")
    print_left(left, later)
    if set(left) - set(later):
        console.print("Remove the rest by hand; the platform no longer knows it.")


def _confirm_delete(name: str) -> None:
    """Deleting a stack cannot be undone: at a terminal, the user types its name."""
    what = "its tasks, routes, history, git remote and images (engine and registry)"
    confirm_by_name(
        name,
        f"This deletes stack {name} with {what}.",
        f"deleting stack {name} removes {what}",
        f"stackyard stacks delete {name}",
        verb="deleted",
    )
