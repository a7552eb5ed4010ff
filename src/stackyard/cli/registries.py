"""``stackyard registries``: the outside registries stacks may push to (admin only).

A password (or access token) is read from stdin with ``--password-stdin`` or from a
hidden prompt, never from an argument: arguments end up in shell history and in every
process listing.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, new_table, print_json
from stackyard.cli.shared import DataDir, Json, Yes, confirm_removal, settings_for
from stackyard.errors import UsageError

app = typer.Typer(
    help="Outside registries (GHCR, Docker Hub, Harbor, ECR, your own) stacks may push to.",
    invoke_without_command=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="registries")


@app.callback()
def registries(ctx: typer.Context, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Outside registries. Without a command: list them."""
    if ctx.invoked_subcommand is None:
        list_registries(data_dir, json_output)


@app.command("list")
def list_registries(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Every outside registry: name, URL, user and the auth scheme it asked for."""
    found = ApiClient.discover(settings_for(data_dir)).get("/api/v1/registries")["registries"]
    if json_output:
        print_json(found)
        return
    table = new_table("NAME", "URL", "USERNAME", "AUTH", "ADDED", "BY", box=None)
    for record in found:
        table.add_row(
            record["name"],
            record["url"],
            record["username"],
            record["auth"],
            record["created_at"][:19].replace("T", " "),
            record["created_by"],
        )
    console.print(table)


@app.command("add")
def add_registry(
    name: str,
    url: Annotated[
        str,
        typer.Option("--url", help="host, host:port or host:port/namespace, e.g. ghcr.io/acme."),
    ],
    username: Annotated[str, typer.Option("--username", help="The registry user.")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password (or token) from stdin."),
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Add a registry after checking that it accepts the credentials (basic or bearer
    token); the password is stored encrypted and never shown again."""
    password = _password(password_stdin, None)
    body = {"name": name, "url": url, "username": username, "password": password}
    record = ApiClient.discover(settings_for(data_dir)).request(
        "POST", "/api/v1/registries", json=body
    )
    if json_output:
        print_json(record)
        return
    _show("added", record)


@app.command("check")
def check_registry(name: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Reach the registry with its stored credentials; say what is wrong (exit 1)."""
    found = ApiClient.discover(settings_for(data_dir)).get(f"/api/v1/registries/{name}/check")
    if json_output:
        print_json(found)
    elif found["ok"]:
        console.print(f"registry {name}: ok (it takes its stored credentials)", highlight=False)
    else:
        err_console.print(f"registry {name}: {found['problem']}", highlight=False)
        err_console.print(
            f"hint: a password or token rotated there: stackyard registries update {name} "
            "--password-stdin",
            highlight=False,
        )
    if not found["ok"]:
        raise typer.Exit(1)


@app.command("update")
def update_registry(
    name: str,
    username: Annotated[
        str | None, typer.Option("--username", help="A new user \\[the stored one].")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the new password (or token) from stdin."),
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Give a registry new credentials (a password or token rotated at the registry),
    checked against it first; the stacks and targets using it go on with them."""
    body: dict[str, Any] = {"password": _password(password_stdin, name)}
    if username is not None:
        body["username"] = username
    record = ApiClient.discover(settings_for(data_dir)).request(
        "PATCH", f"/api/v1/registries/{name}", json=body
    )
    if json_output:
        print_json(record)
        return
    _show("updated", record)


@app.command("remove")
def remove_registry(
    name: str, yes: Yes = False, data_dir: DataDir = None, json_output: Json = False
) -> None:
    """Remove a registry and its stored credentials. Asks first (--yes: do not)."""
    if not yes:
        confirm_removal(
            f"Remove registry {name} and its stored credentials?",
            f"removing registry {name} deletes its stored credentials",
            f"stackyard registries remove {name}",
        )
    record = ApiClient.discover(settings_for(data_dir)).request(
        "DELETE", f"/api/v1/registries/{name}"
    )
    if json_output:
        print_json(record)
        return
    _show("removed", record)


def _show(what: str, record: dict[str, Any]) -> None:
    console.print(
        f"{what} registry [bold]{record['name']}[/]: {record['url']} as {record['username']} "
        f"({record['auth']} auth)",
        highlight=False,
    )


def _password(from_stdin: bool, existing: str | None) -> str:
    if from_stdin:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
    elif sys.stdin.isatty():
        value = str(typer.prompt("Password (or token)", hide_input=True))
    else:
        raise UsageError(
            "no password given",
            hint="pipe it in with --password-stdin: "
            + (
                f'echo "$TOKEN" | stackyard registries update {existing} --password-stdin'
                if existing
                else 'echo "$TOKEN" | stackyard registries add NAME --url URL --username U '
                "--password-stdin"
            ),
        )
    if not value:
        raise UsageError("the password is empty", hint="give the registry password or token")
    return value
