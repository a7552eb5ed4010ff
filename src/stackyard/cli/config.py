"""``stackyard config``: validate stackyard.yml and print its JSON Schema.

``check`` reads the file and its per-stage override files; ``schema`` is for editors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stackyard.cli.output import console, err_console, escape, print_json
from stackyard.cli.shared import DataDir, settings_for
from stackyard.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from stackyard.config.loading import LoadedConfig
    from stackyard.config.yamlfile import Problem

# The config models load inside the commands: other ``stackyard`` commands start without them.

app = typer.Typer(help="Validate stackyard.yml and print its JSON Schema.", no_args_is_help=True)


def _locate(path: Path) -> tuple[Path, str]:
    """The repository directory and config file name that ``path`` stands for."""
    from stackyard.config.loading import DEFAULT_FILE

    if path.is_dir():
        return path, DEFAULT_FILE
    if path.is_file():
        return path.parent, path.name
    raise ConfigError(
        f"{path}: no such file or directory",
        hint="give a stackyard.yml file, or a directory that holds one",
    )


def _warning_json(problem: Problem) -> dict[str, Any]:
    from stackyard.config.yamlfile import dotted_path

    position = problem.position
    return {
        "file": problem.source,
        "line": position.line if position else None,
        "column": position.column if position else None,
        "key": dotted_path(problem.path),
        "message": problem.message,
        "text": str(problem),
    }


def _print_summary(loaded: LoadedConfig, path: Path) -> None:
    from rich.table import Table

    from stackyard.config.loading import DEFAULT_FILE

    config = loaded.config
    if loaded.is_default:
        console.print(
            f"no {DEFAULT_FILE} in {path}: using the default stages",
            highlight=False,
            soft_wrap=True,
        )
    else:
        names = ", ".join(str(file) for file in loaded.files)
        console.print(f"valid: {names}", highlight=False, soft_wrap=True)
    title = f"stack {config.name}" if config.name else None
    table = Table(title=title, title_justify="left")
    for column in ("stage", "target", "promotion", "replicas", "cpu", "memory", "route"):
        table.add_column(column)
    for stage in config.stages:
        table.add_row(
            stage.name,
            stage.target,
            stage.promotion,
            str(stage.replicas),
            f"{stage.cpu:g}",
            stage.memory,
            stage.route,
        )
    console.print(table)


@app.command()
def check(
    path: Annotated[
        Path,
        typer.Argument(help="A stackyard.yml file, or a directory that holds one."),
    ] = Path("."),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result and the full config as JSON.")
    ] = False,
    targets: Annotated[
        str | None,
        typer.Option(
            "--targets",
            help="Check each stage's target: against these names (comma-separated; local "
            "is always one).",
        ),
    ] = None,
    platform: Annotated[
        bool,
        typer.Option(
            "--platform",
            help="Check each stage's target against the platform's targets (an admin's "
            "token: stackyard targets).",
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Validate stackyard.yml and its stackyard.<stage>.yml override files.

    Exits with status 2 when the configuration is invalid. Warnings (such as unknown
    keys) go to stderr and do not fail the check. A stage's target is checked with
    --targets or --platform (a build on the platform always checks it).
    """
    from stackyard.config.loading import load_stack_config

    repo_dir, file = _locate(path)
    names = _target_names(targets, platform=platform, data_dir=data_dir)
    loaded = load_stack_config(repo_dir, file=file, targets=names)
    for problem in loaded.warnings:
        err_console.print(
            f"[yellow]warning:[/] {escape(str(problem))}", highlight=False, soft_wrap=True
        )
    unchecked = sorted({s.target for s in loaded.config.stages if s.target != "local"})
    if names is None and unchecked:
        err_console.print(
            f"note: target(s) {', '.join(unchecked)} not checked against the platform's "
            "targets (offline); add --platform, or --targets a,b",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print_json(
            {
                "valid": True,
                "warnings": [_warning_json(problem) for problem in loaded.warnings],
                "files": [str(file) for file in loaded.files],
                "config": loaded.config.model_dump(mode="json"),
            }
        )
        return
    _print_summary(loaded, path)


def _target_names(given: str | None, *, platform: bool, data_dir: Path | None) -> set[str] | None:
    """The target names stages may name: given, the platform's, or None (not checked)."""
    if given is not None and platform:
        raise UsageError("give --targets or --platform, not both")
    if given is not None:
        return {"local", *(name.strip() for name in given.split(",") if name.strip())}
    if not platform:
        return None
    from stackyard.cli.client import ApiClient

    found = ApiClient.discover(settings_for(data_dir)).get("/api/v1/targets")["targets"]
    return {str(record["name"]) for record in found}


@app.command()
def schema(
    as_json: Annotated[
        bool, typer.Option("--json", help="Accepted for symmetry: the schema is always JSON.")
    ] = True,
) -> None:
    """Print the JSON Schema of stackyard.yml, for editors and linters."""
    from stackyard.config.models import json_schema

    print_json(json_schema())
