"""``stackyard targets``: the places where stages run (admin only); ``local`` is built in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, Yes, confirm_removal, settings_for
from stackyard.errors import UsageError

app = typer.Typer(
    help="Targets: an engine (docker or swarm) by endpoint, its registry and region.",
    invoke_without_command=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="targets")


@app.callback()
def targets(ctx: typer.Context, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Targets. Without a command: list them."""
    if ctx.invoked_subcommand is None:
        list_targets(data_dir, json_output)


@app.command("list")
def list_targets(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Every target, ``local`` first: engine, endpoint, registry, region, router, nodes, stages.

    NODES is ``?`` for a swarm that did not answer; STAGES lists ``stack/stage``.
    """
    found = ApiClient.discover(settings_for(data_dir)).get("/api/v1/targets")["targets"]
    if json_output:
        print_json(found)
        return
    table = new_table(
        "NAME", "ENGINE", "ENDPOINT", "REGISTRY", "REGION", "ROUTER", "NODES", "STAGES", box=None
    )
    for record in found:
        table.add_row(
            record["name"],
            record["engine"],
            record["endpoint"] or "(the platform's)",
            record["registry"],
            record["region"] or "-",
            record["router"],
            "?" if record.get("nodes") is None else str(record["nodes"]),
            ", ".join(record.get("stages") or []) or "-",
        )
    console.print(table)


@app.command("add")
def add_target(
    name: str,
    docker: Annotated[
        str | None, typer.Option("--docker", help="A Docker engine's endpoint (unix:// or tcp://).")
    ] = None,
    swarm: Annotated[
        str | None, typer.Option("--swarm", help="A Swarm manager's endpoint (unix:// or tcp://).")
    ] = None,
    registry: Annotated[
        str,
        typer.Option("--registry", help="The outside registry the engine pulls from."),
    ] = "local",
    region: Annotated[str, typer.Option("--region", help="A region name, e.g. eu-west.")] = "",
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Add a target: one engine (--docker or --swarm), its registry and region."""
    if (docker is None) == (swarm is None):
        raise UsageError(
            "give the target's engine: --docker ENDPOINT or --swarm ENDPOINT (one of them)"
        )
    engine, endpoint = ("docker", docker) if docker is not None else ("swarm", swarm)
    body = {
        "name": name,
        "engine": engine,
        "endpoint": endpoint,
        "registry": registry,
        "region": region,
    }
    client = ApiClient.discover(settings_for(data_dir))
    record = client.request("POST", "/api/v1/targets", json=body)
    if json_output:
        print_json(record)
        return
    _show("added", record)
    # Stored either way (an engine may be added before it is up), but said at once: the
    # same check as `targets check`, each call bounded (10 s).
    checked = client.get(f"/api/v1/targets/{name}/check")
    for part in ("engine", "registry"):
        if checked[part] != "ok":
            err_console.print(
                f"[yellow]warning:[/] {escape(str(checked[part]))}", highlight=False, soft_wrap=True
            )
    if not checked["ok"]:
        err_console.print(f"check it again: stackyard targets check {name}", highlight=False)


@app.command("check")
def check_target(name: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Reach the target's engine and registry, and say what is wrong (exit 1 if anything)."""
    result = ApiClient.discover(settings_for(data_dir)).get(f"/api/v1/targets/{name}/check")
    if json_output:
        print_json(result)
    else:
        nodes = f" ({result['nodes']} nodes)" if result.get("nodes") is not None else ""
        console.print(f"target {result['target']}", highlight=False)
        console.print(f"  engine    {result['engine']}{nodes}", highlight=False, markup=False)
        console.print(f"  registry  {result['registry']}", highlight=False, markup=False)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("remove")
def remove_target(
    name: str, yes: Yes = False, data_dir: DataDir = None, json_output: Json = False
) -> None:
    """Remove a target; refused while a stage runs on it or names it. Asks first (--yes:
    do not)."""
    if not yes:
        confirm_removal(
            f"Remove target {name}?",
            f"removing target {name} forgets its engine endpoint and registry",
            f"stackyard targets remove {name}",
        )
    record = ApiClient.discover(settings_for(data_dir)).request("DELETE", f"/api/v1/targets/{name}")
    if json_output:
        print_json(record)
        return
    _show("removed", record)


def _show(what: str, record: dict[str, Any]) -> None:
    region = f", region {record['region']}" if record["region"] else ""
    console.print(
        f"{what} target [bold]{record['name']}[/]: {record['engine']} {record['endpoint']}, "
        f"registry {record['registry']}{region}",
        highlight=False,
    )
