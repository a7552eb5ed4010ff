"""``stackyard env`` and ``stackyard secrets``: a stack's variables and secrets, through the API.

A secret's value is read from stdin or a hidden prompt, never from an argument: arguments
end up in shell history and in every process listing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, new_table, print_json
from stackyard.cli.shared import DataDir, Json, StackFirstGroup, settings_for
from stackyard.errors import UsageError

env_app = typer.Typer(
    help="Build and runtime variables of a stack (changing one redeploys or rebuilds).",
    no_args_is_help=True,
    cls=StackFirstGroup,
)
secrets_app = typer.Typer(
    help="Secrets of a stack: stored encrypted, never shown again, masked in every log.",
    no_args_is_help=True,
    cls=StackFirstGroup,
)

Stage = Annotated[
    str | None,
    typer.Option("--stage", help="One stage only (default: every stage of the stack)."),
]
Build = Annotated[
    bool, typer.Option("--build", help="Build variables (docker build args, build.yml env).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")
    app.add_typer(secrets_app, name="secrets")


def _query(stage: str | None, build: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if stage is not None:
        params["stage"] = stage
    if build:
        params["build"] = "true"
    return params


def _scope(stage: str | None, build: bool = False) -> str:
    if build:
        return "the build"
    return f"stage {stage}" if stage else "every stage"


def _assignments(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(
                f"'{pair}' is not KEY=VALUE", hint="write it as NAME=value, e.g. LOG_LEVEL=debug"
            )
        values[name] = value
    return values


def _show_change(change: dict[str, Any]) -> None:
    names = ", ".join(change["changed"])
    scope = _scope(change["stage"], change["kind"] == "build")
    if not names:
        console.print(f"Nothing changed for {scope}: the values are the ones already set.")
        return
    console.print(f"Changed {names} for {scope}.")
    for secret in change["secrets"]:
        console.print(f"  {_secret_text(secret)}")
    for item in change["redeployed"]:
        console.print(
            f"  {item['stage']}: release {item['release']}, deployment {item['deployment']} "
            "(same image, new config)"
        )
    for problem in change["not_redeployed"]:
        err_console.print(f"[yellow]warning:[/] {problem['stage']} not redeployed: ", end="")
        err_console.print(problem["error"], highlight=False, markup=False)
    if change["rebuild"]:
        console.print(f"  rebuilding: {change['rebuild']}")
    elif change["kind"] != "build" and not change["redeployed"] and not change["not_redeployed"]:
        console.print("  no stage runs a release yet: the next release gets it")


def _secret_text(secret: dict[str, Any]) -> str:
    return f"(secret, v{secret['version']}, set {secret['updated_at'][:19].replace('T', ' ')})"


# -- env


def _change_variables(
    stack: str,
    body: dict[str, Any],
    stage: str | None,
    build: bool,
    data_dir: Path | None,
    json_output: bool,
) -> None:
    """One PATCH of the stack's variables, and what it set off (releases, a rebuild)."""
    path = f"/api/v1/stacks/{stack}/variables"
    _send_change("PATCH", path, _query(stage, build), body, data_dir, json_output)


def _send_change(
    method: str,
    path: str,
    params: dict[str, Any],
    body: dict[str, Any] | None,
    data_dir: Path | None,
    json_output: bool,
) -> None:
    """One change of variables or secrets, then what it set off (releases, a rebuild).

    No timeout: the API answers once the releases it made are recorded."""
    client = ApiClient.discover(settings_for(data_dir))
    change = client.request(method, path, params=params, json=body, timeout=None)
    if json_output:
        print_json(change)
    else:
        _show_change(change)


@env_app.command("set")
def env_set(
    stack: str,
    pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
    stage: Stage = None,
    build: Build = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Set variables; runtime ones make a new release of each stage they reach and deploy
    it, build ones start a rebuild."""
    body = {"set": _assignments(pairs)}
    _change_variables(stack, body, stage, build, data_dir, json_output)


@env_app.command("unset")
def env_unset(
    stack: str,
    keys: Annotated[list[str], typer.Argument(metavar="KEY...")],
    stage: Stage = None,
    build: Build = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Remove variables set through the platform (stackyard.yml's own stay)."""
    _change_variables(stack, {"unset": keys}, stage, build, data_dir, json_output)


@env_app.command("list")
def env_list(
    stack: str, stage: Stage = None, data_dir: DataDir = None, json_output: Json = False
) -> None:
    """Build and runtime variables, and secrets by name and version (never their values)."""
    client = ApiClient.discover(settings_for(data_dir))
    variables = client.get(f"/api/v1/stacks/{stack}/variables", params=_query(stage))
    secrets = client.get(f"/api/v1/stacks/{stack}/secrets", params=_query(stage))
    if stage is not None:  # a stage's view also shows the build variables
        build = client.get(f"/api/v1/stacks/{stack}/variables", params=_query(None, True))
        variables["variables"] = build["variables"] + variables["variables"]
    if json_output:
        print_json({**variables, "secrets": secrets["secrets"]})
        return
    rows = [
        (v["name"], v["value"], v["kind"], v["stage"] or "*") for v in variables["variables"]
    ] + [(s["name"], _secret_text(s), "runtime", s["stage"] or "*") for s in secrets["secrets"]]
    if not rows:
        console.print(f"No variables or secrets set for {stack} through the platform.")
        return
    table = new_table("NAME", "VALUE", "KIND", "STAGE", box=None)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("STAGE * applies to every stage; a stage's own value wins over it.")


# -- secrets


def _secret_value(name: str) -> str:
    if not sys.stdin.isatty():
        value = sys.stdin.read()
        return value[:-1] if value.endswith("\n") else value  # `echo` adds one
    return str(typer.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True))


@secrets_app.command("set")
def secrets_set(
    stack: str,
    key: str,
    stage: Stage = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Set a secret from stdin (or a hidden prompt); each stage it reaches is redeployed."""
    if "=" in key:
        name = key.partition("=")[0]
        raise UsageError(
            "a secret's value is never taken from an argument (shell history, process list)",
            hint=f'pipe it: printf %s "$VALUE" | stackyard secrets set {stack} {name}'
            + (f" --stage {stage}" if stage else "")
            + " (or run it in a terminal for a hidden prompt)",
        )
    value = _secret_value(key)
    path = f"/api/v1/stacks/{stack}/secrets/{key}"
    _send_change("PUT", path, _query(stage), {"value": value}, data_dir, json_output)


@secrets_app.command("list")
def secrets_list(
    stack: str, stage: Stage = None, data_dir: DataDir = None, json_output: Json = False
) -> None:
    """Secrets by name, version and when they were set; never their values."""
    client = ApiClient.discover(settings_for(data_dir))
    secrets = client.get(f"/api/v1/stacks/{stack}/secrets", params=_query(stage))["secrets"]
    if json_output:
        print_json(secrets)
        return
    if not secrets:
        console.print(f"No secrets for {stack}. Set one: stackyard secrets set {stack} NAME")
        return
    table = new_table("NAME", "STAGE", "VERSION", "SET", box=None)
    for secret in secrets:
        table.add_row(
            secret["name"],
            secret["stage"] or "*",
            f"v{secret['version']}",
            secret["updated_at"][:19].replace("T", " "),
        )
    console.print(table)


@secrets_app.command("unset")
def secrets_unset(
    stack: str,
    key: str,
    stage: Stage = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Remove a secret (its old versions stay, so a rollback can bring them back)."""
    path = f"/api/v1/stacks/{stack}/secrets/{key}"
    _send_change("DELETE", path, _query(stage), None, data_dir, json_output)
