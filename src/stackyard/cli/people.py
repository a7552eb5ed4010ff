"""``stackyard login``, ``logout``, ``whoami``, ``users`` and ``tokens``: who uses the platform.

A token is printed once, by the command that makes it (``users add``, ``tokens create``),
and never again. ``login`` reads a token from a hidden prompt (or stdin), never from an
argument: arguments end up in shell history and process listings.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient, api_url
from stackyard.cli.output import console, err_console, new_table, print_json
from stackyard.cli.shared import DataDir, Json, Yes, confirm_removal, settings_for
from stackyard.errors import UsageError

users_app = typer.Typer(
    help="People and their roles: viewer, deployer, admin.", invoke_without_command=True
)
tokens_app = typer.Typer(
    help="Your tokens (an admin's: everyone's): make, list, revoke.", invoke_without_command=True
)

Role = Annotated[str, typer.Option("--role", help="viewer, deployer or admin.")]


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "never"


def show_new_token(token: str, what: str) -> None:
    """A token on stdout alone (so ``$(...)`` captures it), what it is on stderr."""
    print(token)
    err_console.print(
        f"[yellow]{what}[/]: this is the only time it is shown. Keep it like a password.",
        highlight=False,
        soft_wrap=True,
    )


# -- logging in


def login(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Store your token for the CLI (mode 0600, in ~/.config/stackyard), used instead of the
    data directory's admin token file. Reads the token from a hidden prompt, or stdin."""
    from stackyard.cli.credentials import store_token

    url = api_url(settings_for(data_dir))
    if sys.stdin.isatty():
        token = typer.prompt("Your token", hide_input=True).strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise UsageError("no token given", hint="paste the token `stackyard users add` printed")
    me = ApiClient(url, token).get("/api/v1/whoami")
    path = store_token(url, token)
    if json_output:
        print_json({"api_url": url, "credentials": str(path), **me})
        return
    console.print(f"Logged in to {url} as [bold]{me['name']}[/] ({me['role']}).")
    console.print(f"The token is stored in {path} (mode 0600).", highlight=False)


def logout(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Forget the token `stackyard login` stored for this platform (it is not revoked)."""
    from stackyard.cli.credentials import store_token

    url = api_url(settings_for(data_dir))
    path = store_token(url, None)
    if json_output:
        print_json({"api_url": url, "credentials": str(path), "logged_out": True})
        return
    console.print(
        f"Logged out of {url}. To make the token unusable too: stackyard tokens revoke ID."
    )


def whoami(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Who the CLI's token belongs to, its role and what it may do."""
    me = ApiClient.discover(settings_for(data_dir)).get("/api/v1/whoami")
    if json_output:
        print_json(me)
        return
    scope = "" if me["scope"] == "role" else f", scoped to {me['scope']} on {me['stack']}"
    console.print(f"{me['name']} ({me['role']}{scope}), token {me['token_id']}")
    console.print(f"  may: {', '.join(me['grants']) or 'nothing'}")


# -- people


def _people_table(people: list[dict[str, Any]]) -> None:
    table = new_table("NAME", "ROLE", "CREATED", "LAST SEEN", "TOKENS", box=None)
    for person in people:
        table.add_row(
            person["name"],
            person["role"],
            _when(person["created_at"]),
            _when(person["last_seen_at"]),
            str(person["tokens"]),
        )
    console.print(table)


@users_app.callback()
def users(ctx: typer.Context, data_dir: DataDir = None, json_output: Json = False) -> None:
    """People and their roles. Without a command: list them."""
    if ctx.invoked_subcommand is None:
        list_users(data_dir, json_output)


@users_app.command("list")
def list_users(data_dir: DataDir = None, json_output: Json = False) -> None:
    """Everyone: name, role, created, last seen, active tokens."""
    people = ApiClient.discover(settings_for(data_dir)).get("/api/v1/users")["people"]
    if json_output:
        print_json(people)
    else:
        _people_table(people)


@users_app.command("add")
def add_user(name: str, role: Role, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Add a person with a role; prints their token once (give it to them)."""
    added = ApiClient.discover(settings_for(data_dir)).request(
        "POST", "/api/v1/users", json={"name": name, "role": role}
    )
    if json_output:
        print_json(added)
        return
    show_new_token(
        added["token"], f"{name} ({role}), token {added['token_id']}; they log in with it"
    )


@users_app.command("role")
def set_role(name: str, role: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Change a person's role (their tokens follow at once)."""
    person = ApiClient.discover(settings_for(data_dir)).request(
        "PATCH", f"/api/v1/users/{name}", json={"role": role}
    )
    if json_output:
        print_json(person)
    else:
        role = person["role"]
        console.print(f"{name} is now {'an' if role == 'admin' else 'a'} {role}.")


@users_app.command("remove")
def remove_user(
    name: str,
    yes: Yes = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Remove a person: their tokens stop working at once. The last admin cannot go."""
    if not yes:
        confirm_removal(
            f"Remove {name} and revoke every token of theirs?",
            f"removing {name} revokes every token of theirs",
            f"stackyard users remove {name}",
        )
    removed = ApiClient.discover(settings_for(data_dir)).request("DELETE", f"/api/v1/users/{name}")
    if json_output:
        print_json(removed)
        return
    console.print(f"Removed {name}; revoked tokens: {', '.join(removed['revoked']) or 'none'}.")
    if removed["unprotected"]:
        console.print(f"Taken off the lists of protected stages: {removed['unprotected']}")


# -- tokens


@tokens_app.callback()
def tokens(
    ctx: typer.Context,
    everyone: Annotated[bool, typer.Option("--all", help="Everyone's tokens (admin).")] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Your tokens. Without a command: list them."""
    if ctx.invoked_subcommand is None:
        list_tokens(everyone, data_dir, json_output)


@tokens_app.command("list")
def list_tokens(
    everyone: Annotated[bool, typer.Option("--all", help="Everyone's tokens (admin).")] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Tokens: id, owner, scope, status, expiry, last use. Never the tokens themselves."""
    found = ApiClient.discover(settings_for(data_dir)).get(
        "/api/v1/tokens", params={"all": everyone}
    )["tokens"]
    if json_output:
        print_json(found)
        return
    table = new_table("ID", "OWNER", "SCOPE", "STATUS", "EXPIRES", "LAST USED", "LABEL", box=None)
    for token in found:
        scope = token["scope"] if token["scope"] == "role" else f"{token['scope']} {token['stack']}"
        table.add_row(
            token["id"],
            token["owner"],
            scope,
            token["status"],
            _when(token["expires_at"]) if token["expires_at"] else "-",
            _when(token["last_used_at"]),
            token["label"],
        )
    console.print(table)


@tokens_app.command("create")
def create_token(
    stack: Annotated[
        str | None, typer.Option("--stack", help="The one stack the token works on.")
    ] = None,
    scope: Annotated[
        str,
        typer.Option("--scope", help="read, push or deploy (with --stack); role: your whole role."),
    ] = "role",
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime, e.g. 30d, 12h \\[never].")
    ] = None,
    label: Annotated[str, typer.Option("--label", help="What it is for (e.g. 'CI').")] = "",
    user: Annotated[
        str | None, typer.Option("--user", help="Whose token (admin; default: yours).")
    ] = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Make a token, e.g. for CI: --stack hello --scope push can push to hello, nothing else.
    Prints it once."""
    body = {"scope": scope, "stack": stack, "expires": expires, "label": label, "user": user}
    issued = ApiClient.discover(settings_for(data_dir)).request("POST", "/api/v1/tokens", json=body)
    if json_output:
        print_json(issued)
        return
    info = issued["info"]
    what = info["scope"] if info["scope"] == "role" else f"{info['scope']} on {info['stack']}"
    until = f", expires {_when(info['expires_at'])}" if info["expires_at"] else ""
    show_new_token(issued["token"], f"token {info['id']} of {info['owner']}: {what}{until}")


@tokens_app.command("revoke")
def revoke_token(token_id: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Revoke a token by its id: it stops working with the next request."""
    revoked = ApiClient.discover(settings_for(data_dir)).request(
        "DELETE", f"/api/v1/tokens/{token_id}"
    )
    if json_output:
        print_json(revoked)
    else:
        console.print(f"Revoked token {token_id} of {revoked['owner']}.")
