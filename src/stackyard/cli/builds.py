"""``stackyard build``, ``builds`` and ``images``: build a commit and see what it produced."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.follow import follow_log
from stackyard.cli.output import console, err_console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import StackyardError
from stackyard.platform.diskuse import human_bytes as human_size
from stackyard.statuses import BuildStatus


def short(digest: str | None, length: int = 19) -> str:
    return digest[:length] if digest else "-"


def build(
    stack: Annotated[str, typer.Argument(help="The stack to build.")],
    commit: Annotated[
        str | None,
        typer.Option("--commit", help="A commit sha, tag or branch \\[the stack's branch]."),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Start it and return.")] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Build a commit of a stack into one image, stored in the registry by digest."""
    client = ApiClient.discover(settings_for(data_dir))
    started = client.request("POST", f"/api/v1/stacks/{stack}/builds", json={"ref": commit})
    number = started["number"]
    base = f"/api/v1/stacks/{stack}/builds/{number}"
    if detach:
        _show_build(started, json_output)
        return
    screen = err_console if json_output else console
    screen.print(f"Build {number} of [bold]{stack}[/] ({started['requested_ref']})")
    follow_log(
        client,
        stack,
        "build",
        number,
        on_line=lambda line: screen.print(escape(line), soft_wrap=True),
    )
    result = client.get(base)
    _show_build(result, json_output)
    if result["status"] != BuildStatus.SUCCEEDED:
        raise StackyardError(
            f"build {number} of {stack} {BuildStatus.FAILED}: {result['error']}",
            hint=f"the whole log is {result['log_path']}",
        )


def _show_build(build_record: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(build_record)
        return
    style = {BuildStatus.SUCCEEDED: "green", BuildStatus.FAILED: "red"}.get(
        build_record["status"], "yellow"
    )
    console.print(
        f"build {build_record['number']}: [{style}]{build_record['status']}[/]"
        f"  commit {build_record['commit_sha'][:12] or '-'}  image {build_record['digest'] or '-'}"
    )


def builds(stack: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """List a stack's builds, newest first."""
    records = ApiClient.discover(settings_for(data_dir)).get(f"/api/v1/stacks/{stack}/builds")
    if json_output:
        print_json(records["builds"])
        return
    table = new_table("BUILD", "STATUS", "COMMIT", "KIND", "DIGEST", "STARTED", box=None)
    for record in records["builds"]:
        table.add_row(
            str(record["number"]),
            record["status"],
            record["commit_sha"][:12] or "-",
            record["kind"] or "-",
            short(record["digest"]),
            (record["started_at"] or "-")[:19].replace("T", " "),
        )
    console.print(table)


def images(stack: str, data_dir: DataDir = None, json_output: Json = False) -> None:
    """List a stack's images: every tag and the digest it points at."""
    listing = ApiClient.discover(settings_for(data_dir)).get(f"/api/v1/stacks/{stack}/images")
    if json_output:
        print_json(listing)
        return
    table = new_table("REPOSITORY", "TAG", "DIGEST", "SIZE", box=None)
    tags = 0
    for image in listing["images"]:
        for tag in image["tags"]:
            tags += 1
            table.add_row(
                listing["repository"], tag, short(image["digest"]), human_size(image["size"])
            )
    console.print(table)
    count = len(listing["images"])
    console.print(f"{count} image{'s' * (count != 1)} under {tags} tag{'s' * (tags != 1)}")


def register(app: typer.Typer) -> None:
    app.command()(build)
    app.command()(builds)
    app.command()(images)
