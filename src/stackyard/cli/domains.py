"""``stackyard domains``: a stack's host names with their certificates, and names added to
or taken from a stage by hand."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import UsageError

Words = Annotated[
    list[str],
    typer.Argument(
        help="STACK to list its names; `add STACK NAME` or `remove STACK NAME` (with --stage).",
        show_default=False,
    ),
]
StageOption = Annotated[
    str | None, typer.Option("--stage", help="The stage a name is added to or removed from.")
]


def domains(
    words: Words,
    stage: StageOption = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Host names of a stack's stages: each with its stage, certificate state, issuer,
    expiry and last error. `add`/`remove` give a stage a name beside those of
    stackyard.yml, or take it back."""
    client = ApiClient.discover(settings_for(data_dir))
    action, stack, name = _parse(words, stage)
    if action == "list":
        found = client.get(f"/api/v1/stacks/{quote(stack)}/domains")
    else:
        path = f"/api/v1/stacks/{quote(stack)}/stages/{quote(str(stage))}/domains"
        if action == "add":
            found = client.request("POST", path, json={"name": name})
        else:
            found = client.request("DELETE", f"{path}/{quote(name)}")
    if json_output:
        print_json(found)
        return
    _print(found)
    if action == "add":
        console.print(
            f"{name} is served by stage {stage} once its route has it (a second or two); "
            f"watch its certificate with: stackyard domains {stack}",
            highlight=False,
        )


def _parse(words: list[str], stage: str | None) -> tuple[str, str, str]:
    if words and words[0] in ("add", "remove"):
        if len(words) != 3 or stage is None:
            raise UsageError(
                f"stackyard domains {words[0]} needs a stack, a name and --stage",
                hint=f"e.g. stackyard domains {words[0]} hello --stage prod www.example.com",
            )
        return words[0], words[1], words[2]
    if len(words) != 1:
        raise UsageError(
            "stackyard domains takes one stack (or add/remove STACK NAME)",
            hint="e.g. stackyard domains hello",
        )
    return "list", words[0], ""


def _print(found: dict[str, Any]) -> None:
    rows = found["domains"]
    if not rows:
        console.print(f"No stage of {found['stack']} is served on a host name.")
        return
    table = new_table("STAGE", "NAME", "TLS", "CERTIFICATE", "ISSUER")
    for row in rows:
        state = row["description"] + (" (added)" if row["added"] else "")
        table.add_row(row["stage"], row["name"], row["tls"], state, row["issuer"])
    console.print(table)
    for row in rows:
        if row["state"] == "failed" and row["hint"]:
            console.print(f"{row['name']}: {escape(row['hint'])}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("domains")(domains)
