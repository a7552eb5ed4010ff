"""``stackyard buildspec``: run a CodeBuild-style build spec locally.

The runner and the build spec models load inside the commands: every other ``stackyard``
command starts without them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stackyard.cli.output import console, err_console, print_json
from stackyard.errors import StackyardError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from stackyard.buildspec.buildlog import LogLine
    from stackyard.buildspec.runner import BuildResult
    from stackyard.config.buildspec import BuildSpec

app = typer.Typer(
    help="Run a CodeBuild-style build spec (version 0.2) locally.", no_args_is_help=True
)

LOG_DIRECTORY = Path(".stackyard") / "logs"


@app.callback()
def main() -> None:
    """Run a CodeBuild-style build spec (version 0.2) locally."""


@app.command("run")
def run(
    file: Annotated[Path, typer.Argument(help="The build spec, e.g. build.yml.")],
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Directory the commands start in.")
    ] = Path("."),
    env: Annotated[
        list[str] | None, typer.Option("--env", help="K=V: a variable for this run (wins).")
    ] = None,
    secret: Annotated[
        list[str] | None, typer.Option("--secret", help="NAME=VALUE: a secret the spec refers to.")
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option("--log-file", help="Log file (default .stackyard/logs/buildspec-<time>.log)."),
    ] = None,
    artifacts_dir: Annotated[
        Path | None, typer.Option("--artifacts-dir", help="Where artifacts.files are copied.")
    ] = None,
    command_timeout: Annotated[
        float | None,
        typer.Option(
            "--command-timeout",
            help="Seconds before a command is killed.",
            show_default="3600",  # the runner's DEFAULT_COMMAND_TIMEOUT; a test checks
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON; phase output goes to stderr.")
    ] = False,
) -> None:
    """Run FILE's phases in order; exit 0 when the build succeeded, 1 when it failed."""
    from stackyard.buildspec.runner import (
        DEFAULT_COMMAND_TIMEOUT,
        RunSettings,
        Status,
        run_buildspec,
    )
    from stackyard.config.buildspec import load_buildspec

    if command_timeout is not None and command_timeout <= 0:
        raise UsageError("--command-timeout must be a positive number of seconds")
    spec, warnings = load_buildspec(file)
    secrets = parse_pairs(secret or [], "--secret", names=False)
    for warning in [*warnings, *unmapped_secrets(spec, secrets, file.name)]:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    settings = RunSettings(
        workdir=workdir,
        log_path=log_file or _default_log_path(),
        overrides=parse_pairs(env or [], "--env", names=True),
        secrets=secrets,
        artifacts_dir=artifacts_dir.resolve() if artifacts_dir else None,
        command_timeout=command_timeout or DEFAULT_COMMAND_TIMEOUT,
    )
    screen = err_console if json_output else console
    result = run_buildspec(spec, settings, sink=lambda line: _show(screen, line))
    _report(result, json_output)
    if result.status is not Status.SUCCEEDED:
        # One error line naming the failed phase, and the log as the hint; exit status 1.
        raise StackyardError(_failure_message(result), hint=f"see the log: {result.log_path}")


def parse_pairs(items: list[str], option: str, *, names: bool) -> dict[str, str]:
    """``K=V`` options as a dict; UsageError (exit 2) on a missing '=' or a bad name."""
    from stackyard.config.buildspec import VARIABLE_NAME

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {item!r}: expected NAME=VALUE")
        if names and not VARIABLE_NAME.fullmatch(key):
            raise UsageError(f"{option} {item!r}: '{key}' is not a valid variable name")
        pairs[key] = value
    return pairs


def unmapped_secrets(spec: BuildSpec, secrets: dict[str, str], file: str) -> list[str]:
    """A warning for each ``--secret`` that no variable of the spec maps: as in CodeBuild,
    a command sees a secret only through a variable of ``env.secrets-manager``."""
    from stackyard.config.buildspec import VARIABLE_NAME

    mapped = set(spec.env.secret_references().values())
    warnings = []
    for name in secrets:
        if name in mapped:
            continue
        variable = name if VARIABLE_NAME.fullmatch(name) else "VARIABLE"
        warnings.append(
            f"--secret {name}: {file} maps no variable to secret '{name}', so no command "
            f"sees it; map one under env.secrets-manager, e.g. "
            f"`env: {{secrets-manager: {{{variable}: {name}}}}}`"
        )
    return warnings


def _failure_message(result: BuildResult) -> str:
    from stackyard.buildspec.runner import Status

    failed = [p for p in result.phases if p.status is Status.FAILED]
    where = ", ".join(f"{p.name} (exit status {p.exit_code})" for p in failed)
    return f"the build FAILED in {where}" if where else "the build FAILED"


def _default_log_path() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return LOG_DIRECTORY / f"buildspec-{stamp}.log"


def _show(screen: Console, line: LogLine) -> None:
    from rich.text import Text

    from stackyard.buildspec.buildlog import LineKind

    if line.kind is LineKind.PHASE:
        screen.print(Text(f"\n== {line.phase} ==", style="bold"))
    elif line.kind is LineKind.OUTPUT:
        screen.print(Text(line.text), soft_wrap=True)
    else:
        screen.print(Text(line.text, style="dim"), soft_wrap=True)


def _report(result: BuildResult, json_output: bool) -> None:
    from stackyard.buildspec.runner import Status

    if json_output:
        print_json(result.summary())
        err_console.print(f"log: {result.log_path}", highlight=False, soft_wrap=True)
        return
    style = "green" if result.status is Status.SUCCEEDED else "red"
    console.print(f"\n[bold {style}]{result.status}[/]", highlight=False)
    for name, value in result.exported.items():
        console.print(f"exported {name}={value}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"log: {result.log_path}", markup=False, highlight=False, soft_wrap=True)
