"""``stackyard nodes``: the nodes of a cluster engine; drain, activate, and give one its address."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import StackyardError

app = typer.Typer(
    help="The nodes of a cluster (stackyard up --engine swarm, or a swarm target): list, "
    "drain, activate, label.",
    invoke_without_command=True,
)
Node = Annotated[str, typer.Argument(help="A node: its id (or a prefix), address or host name.")]
Target = Annotated[
    str,
    typer.Option(
        "--target", help="The swarm target whose nodes these are; local is the platform's engine."
    ),
]


def _client(data_dir: Any) -> ApiClient:
    return ApiClient.discover(settings_for(data_dir))


def _show(nodes: list[dict[str, Any]]) -> None:
    table = new_table("ID", "NAME", "ADDRESS", "ROLE", "STATE", "AVAILABILITY", "TASKS", box=None)
    for node in nodes:
        address = node["address"] or "-"
        if node["address_from"] != "label":
            address += " (Swarm's guess: stackyard nodes label)"
        if node["address_problem"]:
            address += f" ({node['address_problem']})"
        availability = node["availability"] + (" (draining)" if node["draining"] else "")
        table.add_row(
            node["id"][:12],
            node["name"],
            address,
            node["role"],
            node["state"],
            availability,
            tasks_cell(node),
        )
    console.print(table)


def tasks_cell(node: dict[str, Any]) -> str:
    """What runs on the node (every Swarm task, of any service) and this platform's share."""
    return f"{node['all_tasks']} ({node['tasks']} ours)"


@app.callback()
def nodes(
    ctx: typer.Context,
    target: Target = "local",
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Each node: id, name, address, role, state, availability, and the tasks it runs: every
    Swarm task there (any service's) and, in brackets, this platform's."""
    if ctx.invoked_subcommand is not None:
        return
    found = _client(data_dir).get("/api/v1/nodes", params={"target": target})["nodes"]
    if json_output:
        print_json(found)
    else:
        _show(found)


@app.command()
def drain(
    node: Node,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Drain even when a stage would be left with no node; Swarm stops the "
            "node's tasks at once.",
        ),
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Request it and return.")] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the node's tasks to move.")
    ] = 600,
    target: Target = "local",
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Move the node's tasks to other nodes with zero downtime, then mark it drained."""
    client = _client(data_dir)
    params = {"target": target}
    found = client.request(
        "POST", f"/api/v1/nodes/{node}/drain", json={"force": force}, params=params
    )
    screen = err_console if json_output else console
    if not detach:
        screen.print(
            f"Draining node {found['id'][:12]} ({found['address']}): {found['tasks']} task(s)"
        )
        found = _wait_drained(client, found["id"], timeout, screen, params)
    if json_output:
        print_json(found)
    elif found["availability"] == "drain":
        console.print(f"Node {found['id'][:12]} ({found['address']}) is drained.")


def _wait_drained(
    client: ApiClient, node_id: str, timeout: float, screen: Any, params: dict[str, str]
) -> Any:
    deadline = time.monotonic() + timeout
    said = None
    while True:
        found = client.get(f"/api/v1/nodes/{node_id}", params=params)
        if found["availability"] == "drain" and not found["draining"]:
            return found
        if found["tasks"] != said:
            said = found["tasks"]
            screen.print(f"  {said} task(s) left on it")
        if time.monotonic() > deadline:
            raise StackyardError(
                f"node {node_id[:12]} still runs {found['tasks']} task(s) after {timeout:.0f} s",
                hint="the stages may have nowhere to go: `stackyard nodes` and each stage's "
                "`stackyard deployments` say why; the drain goes on in the background",
            )
        time.sleep(0.5)


@app.command()
def activate(
    node: Node, target: Target = "local", data_dir: DataDir = None, json_output: Json = False
) -> None:
    """Let the node take new tasks again (no task moves to it by itself)."""
    found = _client(data_dir).request(
        "POST", f"/api/v1/nodes/{node}/activate", params={"target": target}
    )
    if json_output:
        print_json(found)
    else:
        console.print(f"Node {found['id'][:12]} ({found['address']}) is active.")


@app.command()
def label(
    node: Node,
    address: Annotated[
        str, typer.Option("--address", help="The address the node's tasks answer on.")
    ],
    target: Target = "local",
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Record the node's routable address (the platform reaches its tasks there)."""
    found = _client(data_dir).request(
        "PUT", f"/api/v1/nodes/{node}/address", json={"address": address}, params={"target": target}
    )
    if json_output:
        print_json(found)
    else:
        console.print(f"Node {found['id'][:12]}: tasks answer on {found['address']}.")
