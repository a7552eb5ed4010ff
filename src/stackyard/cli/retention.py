"""``stackyard prune``: run retention now, or show what it would remove."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, escape, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.platform.diskuse import human_bytes as human_size


def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; remove nothing.")
    ] = False,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Remove what no rollback needs: old images (registry and engine), old logs, then
    collect the registry's garbage. Keeps the last N releases per stage (`up --keep-releases`)."""
    client = ApiClient.discover(settings_for(data_dir))
    report = client.request(
        "POST",
        "/api/v1/platform/retention",
        params={"dry_run": "true" if dry_run else "false"},
        timeout=None,
    )
    if json_output:
        print_json(report)
    else:
        show_report(report)
    if report["errors"]:
        raise typer.Exit(1)


def show_report(report: dict[str, Any]) -> None:
    verb = "would remove" if report["dry_run"] else "removed"
    console.print(
        f"retention (last {report['keep_releases']} releases per stage kept) {verb}: "
        f"{len(report['manifests'])} registry manifest(s), "
        f"{len(report['engine_references'])} engine image reference(s), "
        f"{len(report['files'])} log file(s) or folder(s), "
        f"{len(report['rotated'])} log(s) rotated"
    )
    if not report["dry_run"]:
        if report["garbage_collected"]:
            seconds = report["garbage_collection_seconds"]
            console.print(f"registry garbage collection ran (read-only for {seconds:.1f} s)")
        else:
            console.print("registry garbage collection did not run")
    show_disk(report["before"], report["after"])
    for error in report["errors"]:
        console.print(f"[red]failed:[/] {escape(str(error))}")


def show_disk(before: dict[str, int], after: dict[str, int] | None = None) -> None:
    """A table of bytes per part: one column, or before, after and the difference."""
    headers = ("PART", "BYTES") if after is None else ("PART", "BEFORE", "AFTER", "FREED")
    table = new_table(*headers, box=None)
    for part, size in before.items():
        if after is None:
            table.add_row(part, human_size(size))
        else:
            later = after.get(part, 0)
            table.add_row(part, human_size(size), human_size(later), human_size(size - later))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(prune)
