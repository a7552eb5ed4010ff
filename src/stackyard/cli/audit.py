"""``stackyard protect`` and ``stackyard audit``: protected stages, and who did what."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, err_console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command()(protect)
    app.command()(audit)


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _show(protection: dict[str, Any]) -> None:
    eyes = ", four eyes" if protection["four_eyes"] else ""
    console.print(
        f"{protection['stack']}/{protection['stage']}: approvers "
        f"{', '.join(protection['approvers']) or 'nobody'}; deployers "
        f"{', '.join(protection['deployers']) or 'nobody'}{eyes}",
        highlight=False,
    )


def protect(
    stack: str,
    stage: Annotated[str | None, typer.Option("--stage", help="The stage to protect.")] = None,
    approvers: Annotated[
        str | None, typer.Option("--approvers", help="Who may pass its gate: a,b.")
    ] = None,
    deployers: Annotated[
        str | None,
        typer.Option(
            "--deployers",
            help="Who may deploy, release, roll back it and change its variables: a,b.",
        ),
    ] = None,
    four_eyes: Annotated[
        bool, typer.Option("--four-eyes", help="The approver may not be who pushed.")
    ] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Unprotect the stage.")] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Protect a stage (stored on the platform, never read from stackyard.yml); without
    --stage, list the stack's protected stages.

    A protected stage always waits at its gate for one of its approvers, and only its
    deployers may deploy, release, roll back it or change its variables.
    """
    client = ApiClient.discover(settings_for(data_dir))
    if stage is None:
        if remove or approvers is not None or deployers is not None or four_eyes:
            raise UsageError("say which stage: --stage NAME")
        found = client.get(f"/api/v1/stacks/{stack}/protection")["protections"]
        if json_output:
            print_json(found)
        elif not found:
            console.print(f"No stage of {stack} is protected.")
        for protection in [] if json_output else found:
            _show(protection)
        return
    path = f"/api/v1/stacks/{stack}/stages/{stage}/protection"
    if remove:
        client.request("DELETE", path)
        if json_output:
            print_json({"stack": stack, "stage": stage, "protected": False})
        else:
            console.print(f"{stack}/{stage} is no longer protected.")
        return
    body = {
        "approvers": _names(approvers),
        "deployers": _names(deployers),
        "four_eyes": four_eyes,
    }
    protection = client.request("PUT", path, json=body)
    if json_output:
        print_json(protection)
    else:
        _show(protection)
    if protection.get("note"):
        err_console.print(f"[yellow]warning:[/] {escape(protection['note'])}", highlight=False)


def audit(
    stack: Annotated[str | None, typer.Option("--stack", help="One stack only.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="One person only.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="One action, e.g. deploy, approve.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only this recent, e.g. 1d, 12h.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many entries.")] = 50,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """The audit log, newest first: who, when, what, from where, and the result."""
    params = {"stack": stack, "user": user, "action": action, "since": since, "limit": limit}
    entries = ApiClient.discover(settings_for(data_dir)).get("/api/v1/audit", params=params)[
        "entries"
    ]
    if json_output:
        print_json(entries)
        return
    if not entries:
        console.print("No entries.")
        return
    table = new_table("WHEN", "WHO", "FROM", "VIA", "ACTION", "STACK", "RESULT", box=None)
    for entry in entries:
        result = f"{entry['result']} {entry['status']}"
        if entry["detail"]:
            result += f": {entry['detail']}"
        table.add_row(
            entry["at"][:19].replace("T", " "),
            entry["actor"] or "-",
            entry["source"],
            entry["via"],
            entry["action"],
            entry["stack"],
            result,
        )
    console.print(table)
