"""``stackyard notify``: a stack's notification channels (Slack, Discord, a signed webhook,
email), a test to every one of them, and what was sent.

A webhook URL carries its token, so ``--slack -`` (and the others) read it from stdin
instead of the command line; an SMTP password is only ever read from stdin or a hidden
prompt. The API keeps both sealed and shows URLs masked.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, StackFirstGroup, Yes, confirm_removal, settings_for
from stackyard.errors import UsageError

app = typer.Typer(
    help="Tell people what happened: Slack, Discord, a signed webhook or email, per stack.",
    no_args_is_help=True,
    cls=StackFirstGroup,
)


def _url_option(service: str) -> Any:
    return typer.Option(
        metavar="URL", help=f"The {service} URL; - reads it from stdin.", show_default=False
    )


Url = Annotated[str | None, _url_option("webhook")]
SlackUrl = Annotated[str | None, _url_option("Slack incoming webhook")]
DiscordUrl = Annotated[str | None, _url_option("Discord webhook")]
SECURITY = ("starttls", "tls", "none")


def _stdin_or(value: str, what: str) -> str:
    """``value``, or one line from stdin when it is ``-``."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        return str(typer.prompt(what, hide_input=True))
    return sys.stdin.readline().strip()


def _password(user: str) -> str:
    if not sys.stdin.isatty():
        value = sys.stdin.read()
        return value[:-1] if value.endswith("\n") else value
    return str(typer.prompt(f"SMTP password of {user}", hide_input=True))


def _smtp(
    server: str | None, security: str, user: str | None, sender: str | None
) -> dict[str, Any]:
    if not server:
        raise UsageError(
            "--email needs the SMTP server that sends the mail",
            hint="add --smtp HOST[:PORT] (and --smtp-user USER, the password from stdin)",
        )
    if security not in SECURITY:
        raise UsageError(f"--smtp-security: '{security}' is not one of {', '.join(SECURITY)}")
    host, _, port = server.rpartition(":") if ":" in server else (server, "", "")
    if port and not port.isdigit():
        raise UsageError(f"--smtp: '{server}' is not HOST or HOST:PORT")
    body: dict[str, Any] = {"host": host, "security": security}
    if port:
        body["port"] = int(port)
    if user:
        body["username"] = user
        body["password"] = _password(user)
    if sender:
        body["sender"] = sender
    return body


@app.command("add")
def add(
    stack: str,
    slack: SlackUrl = None,
    discord: DiscordUrl = None,
    webhook: Url = None,
    email: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Mail each event to this address.")
    ] = None,
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--events",
            help="Comma-separated events to send (default: all): approval, completed, failed, "
            "rolled-back, build-failed, healed, certificate.",
        ),
    ] = None,
    smtp: Annotated[
        str | None, typer.Option("--smtp", metavar="HOST[:PORT]", help="With --email.")
    ] = None,
    smtp_security: Annotated[
        str, typer.Option("--smtp-security", help="starttls (587), tls (465) or none (25).")
    ] = "starttls",
    smtp_user: Annotated[
        str | None,
        typer.Option("--smtp-user", help="Log in as this user; the password is read from stdin."),
    ] = None,
    sender: Annotated[
        str | None, typer.Option("--from", metavar="ADDRESS", help="The mail's sender.")
    ] = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Add a channel: --slack URL, --discord URL, --webhook URL or --email ADDRESS.

    A URL carries the webhook's token: give "-" to read it from stdin, out of shell history.
    A webhook channel's signing secret is printed once.
    """
    chosen = {
        k: v
        for k, v in {"slack": slack, "discord": discord, "webhook": webhook, "email": email}.items()
        if v is not None
    }
    if len(chosen) != 1:
        raise UsageError(
            "give one of --slack, --discord, --webhook or --email",
            hint=f"e.g. stackyard notify add {stack} --slack https://hooks.slack.com/services/...",
        )
    [(kind, target)] = chosen.items()
    body: dict[str, Any] = {
        "kind": kind,
        "target": _stdin_or(target, f"The {kind} URL"),
        "events": events or [],
    }
    if kind == "email":
        body["smtp"] = _smtp(smtp, smtp_security, smtp_user, sender)
    client = ApiClient.discover(settings_for(data_dir))
    channel = client.request("POST", f"/api/v1/stacks/{stack}/notify", json=body)
    if json_output:
        print_json(channel)
        return
    console.print(
        f"Added channel {channel['number']} of {stack}: {channel['kind']} "
        f"{escape(channel['shown'])}, for {', '.join(channel['events'])}",
        highlight=False,
        soft_wrap=True,
    )
    if channel.get("signing_secret"):
        console.print(f"  signing secret  {channel['signing_secret']}", highlight=False)
        console.print(
            "[yellow]Shown once:[/] the receiver checks X-Hub-Signature-256 "
            "(sha256=HMAC-SHA256 of the body) with it.",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"Try it: stackyard notify test {stack}", highlight=False)


@app.command("list")
def list_channels(stack: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """The stack's channels (URLs masked) and the events each one gets."""
    client = ApiClient.discover(settings_for(data_dir))
    found = client.get(f"/api/v1/stacks/{stack}/notify")
    if json_output:
        print_json(found)
        return
    if not found["channels"]:
        console.print(f"No channels for {stack}. Add one: stackyard notify add {stack} --slack URL")
        return
    table = new_table("#", "KIND", "WHERE", "EVENTS", box=None)
    for channel in found["channels"]:
        where = channel["shown"]
        if channel.get("smtp"):
            where += f" via {channel['smtp']['host']}:{channel['smtp']['port']}"
        table.add_row(str(channel["number"]), channel["kind"], where, ", ".join(channel["events"]))
    console.print(table)


@app.command("remove")
def remove(
    stack: str, number: int, yes: Yes = False, data_dir: DataDir = None, json_output: Json = False
) -> None:
    """Remove channel NUMBER; what it had still to send is dropped. Asks first (--yes: do
    not)."""
    if not yes:
        confirm_removal(
            f"Remove channel {number} of {stack}? What it has still to send is dropped.",
            f"removing channel {number} of {stack} drops what it has still to send",
            f"stackyard notify remove {stack} {number}",
        )
    client = ApiClient.discover(settings_for(data_dir))
    removed = client.request("DELETE", f"/api/v1/stacks/{stack}/notify/{number}")
    if json_output:
        print_json(removed)
        return
    console.print(
        f"Removed channel {removed['number']} of {stack} ({removed['kind']} "
        f"{escape(removed['shown'])})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("test")
def send_test(stack: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """Send a test event to every channel and report each outcome (exit 1 if one failed)."""
    client = ApiClient.discover(settings_for(data_dir))
    report = client.request("POST", f"/api/v1/stacks/{stack}/notify/test", timeout=60)
    failed = [c for c in report["channels"] if c["status"] != "DELIVERED"]
    if json_output:
        print_json(report)
    elif not report["channels"]:
        console.print(f"No channels for {stack}. Add one: stackyard notify add {stack} --slack URL")
    else:
        for channel in report["channels"]:
            colour = "green" if channel["status"] == "DELIVERED" else "red"
            console.print(
                f"channel {channel['channel']} "
                f"{channel['kind']} {escape(channel['shown'])}: "
                f"[{colour}]{channel['status']}[/] {escape(channel['detail'])}",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        raise typer.Exit(1)


@app.command("log")
def log(
    stack: str,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """What was sent to each channel: status, tries, the last error."""
    client = ApiClient.discover(settings_for(data_dir))
    found = client.get(f"/api/v1/stacks/{stack}/notify/deliveries", params={"limit": limit})
    deliveries = found["deliveries"]
    if json_output:
        print_json(deliveries)
        return
    if not deliveries:
        console.print(f"Nothing sent for {stack} yet.")
        return
    table = new_table("EVENT", "WHEN", "KIND", "CHANNEL", "STATUS", "TRIES", "NOTE", box=None)
    for d in deliveries:
        note = d["last_error"] or d["title"]
        if d["status"] == "PENDING" and d["next_attempt_at"]:
            note = f"next try {d['next_attempt_at'][11:19]}; {note}"
        table.add_row(
            str(d["event"]),
            d["created_at"][:19].replace("T", " "),
            d["kind"],
            str(d["channel"]),
            d["status"],
            str(d["attempts"]),
            note,
        )
    console.print(table)
