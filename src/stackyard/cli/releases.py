"""``stackyard release`` and ``releases``: promote a digest to a stage and see the history."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stackyard.cli.builds import short
from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import UsageError

Stage = Annotated[str, typer.Option("--stage", help="The stage, e.g. dev, staging or prod.")]


def release(
    stack: str,
    stage: Stage,
    commit: Annotated[
        str | None, typer.Option("--commit", help="Release the image built from this commit.")
    ] = None,
    digest: Annotated[
        str | None, typer.Option("--digest", help="Release this image digest (sha256:…).")
    ] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Release the image this tag points at.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Release a chosen image never released to the previous stage."
        ),
    ] = False,
    deploy: Annotated[
        bool, typer.Option("--deploy", help="Then deploy the release, and follow it.")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="With --deploy: request the deployment and return.")
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Release a stage: promote what the previous stage runs (no rebuild), and record it.

    With --commit, --digest or --tag, release that image instead; it must have been
    released to the previous stage at some point, unless --force (recorded as forced).
    The stage keeps running its current release until it is deployed: --deploy, or
    `stackyard deploy STACK --stage S` afterwards.
    """
    if detach and not deploy:
        raise UsageError("--detach needs --deploy (a release alone returns at once)")
    client = ApiClient.discover(settings_for(data_dir))
    choice = {"commit": commit, "digest": digest, "tag": tag}
    body: dict[str, Any] = {key: value for key, value in choice.items() if value is not None}
    if force:
        body["force"] = True
    record = client.request(
        "POST", f"/api/v1/stacks/{stack}/stages/{stage}/releases", json=body, timeout=None
    )
    if not deploy:
        if json_output:
            print_json(record)
            return
        _show(record)
        console.print(
            f"  not deployed: {record['stage']} runs its current release until "
            f"`stackyard deploy {record['stack']} --stage {record['stage']}`",
            highlight=False,
        )
        return
    if not json_output:
        _show(record)
    from stackyard.cli.deployments import stage_path, wait_for_deployment

    deployment = client.request(
        "POST", f"{stage_path(stack, stage)}/deployments", json={"release": record["number"]}
    )
    if not detach:
        deployment = wait_for_deployment(client, stack, stage, deployment, json_output)
    if json_output:
        print_json({"release": record, "deployment": deployment})


def _show(record: dict[str, Any]) -> None:
    console.print(
        f"release {record['number']} of [bold]{record['stack']}[/] {record['stage']}: "
        f"{record['digest']}"
    )
    console.print(
        f"  commit {record['commit_sha'][:12]}  build {record['build_number']}  "
        f"via {record['source']}  ({origin(record)})"
    )


def origin(record: dict[str, Any]) -> str:
    """Where a release came from, as ``releases`` shows it: ``chosen, forced by ann``."""
    shown = str(record.get("origin", "promotion"))
    if record.get("forced"):
        shown += f", forced by {record['created_by']}"
    return shown


def releases(
    stack: str,
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage.")] = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """List a stack's releases (numbered per stage), newest first."""
    client = ApiClient.discover(settings_for(data_dir))
    path = (
        f"/api/v1/stacks/{stack}/stages/{stage}/releases"
        if stage
        else f"/api/v1/stacks/{stack}/releases"
    )
    records = client.get(path)["releases"]
    if json_output:
        print_json(records)
        return
    table = new_table(
        "STAGE", "RELEASE", "DIGEST", "COMMIT", "BUILD", "ORIGIN", "VIA", "CREATED", box=None
    )
    for record in records:
        table.add_row(
            record["stage"],
            str(record["number"]),
            short(record["digest"]),
            record["commit_sha"][:12],
            str(record["build_number"] or "-"),
            origin(record),
            record["source"],
            record["created_at"][:19].replace("T", " "),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(release)
    app.command()(releases)
