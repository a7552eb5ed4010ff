"""``stackyard buildspec``: run a CodeBuild-style build spec locally.

By default the commands run in a build container, as builds on the platform do, with
the directory's git work tree mounted and a Docker API that can build, tag and push;
``--on-host`` runs them as processes of this machine, for a quick check. The runner and
the build spec models load inside the commands: every other ``stackyard`` command starts
without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stackyard.cli.output import console, err_console, escape, print_json
from stackyard.errors import StackyardError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from stackyard.buildspec.buildlog import LogLine
    from stackyard.buildspec.isolation import BuildIsolation
    from stackyard.buildspec.runner import BuildResult
    from stackyard.buildspec.shell import CommandShell
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
    on_host: Annotated[
        bool,
        typer.Option(
            "--on-host",
            help="Run the commands as processes of this machine, as you, instead of in a "
            "build container.",
        ),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="The build container's image.",
            show_default="stackyard/build:bookworm",
        ),
    ] = None,
) -> None:
    """Run FILE's phases in order; exit 0 when the build succeeded, 1 when it failed.

    The commands run in a build container (the git work tree that holds --workdir at
    /codebuild/output/src, a Docker API that builds, tags and pushes), unless --on-host.
    """
    from stackyard.buildspec.runner import (
        DEFAULT_COMMAND_TIMEOUT,
        RunSettings,
        Status,
        checked_workdir,
        run_buildspec,
    )
    from stackyard.config.buildspec import load_buildspec

    if command_timeout is not None and command_timeout <= 0:
        raise UsageError("--command-timeout must be a positive number of seconds")
    spec, warnings = load_buildspec(file)
    secrets = parse_pairs(secret or [], "--secret", names=False)
    for warning in [*warnings, *unmapped_secrets(spec, secrets, file.name)]:
        err_console.print(
            f"[yellow]warning:[/] {escape(str(warning))}", highlight=False, soft_wrap=True
        )
    settings = RunSettings(
        workdir=checked_workdir(workdir),
        log_path=log_file or _default_log_path(),
        overrides=parse_pairs(env or [], "--env", names=True),
        secrets=secrets,
        artifacts_dir=artifacts_dir.resolve() if artifacts_dir else None,
        command_timeout=command_timeout or DEFAULT_COMMAND_TIMEOUT,
    )
    screen = err_console if json_output else console
    isolation = _isolation(on_host, image)
    try:
        shell = _shell(isolation, settings.workdir, settings.artifacts_dir, settings.overrides)
        result = run_buildspec(spec, settings, sink=lambda line: _show(screen, line), shell=shell)
    finally:
        isolation.close()
    _report(result, json_output)
    if result.status is not Status.SUCCEEDED:
        # One error line naming the failed phase, and the log as the hint; exit status 1.
        raise StackyardError(_failure_message(result), hint=f"see the log: {result.log_path}")


def _isolation(on_host: bool, image: str | None) -> BuildIsolation:
    """This host, or build containers with this machine's default build limits."""
    from stackyard.buildspec.isolation import BuildIsolation
    from stackyard.images.dockerproxy.rules import BuildLimits
    from stackyard.images.dockerproxy.server import BuildProxy
    from stackyard.settings import Settings

    if on_host:
        return BuildIsolation(None)
    defaults = Settings()
    limits = BuildLimits(
        cpus=defaults.build_cpus,
        memory=defaults.build_memory,
        pids=defaults.build_pids,
        disk=defaults.build_disk,
    )
    return BuildIsolation(BuildProxy(), image=image or defaults.build_image, limits=limits)


def _shell(
    isolation: BuildIsolation,
    workdir: Path,
    artifacts: Path | None,
    overrides: Mapping[str, str],
) -> CommandShell:
    """The run's shell: its build container mounts the git work tree that holds the
    workdir (so git works inside), or the workdir alone outside one; a push may go to any
    registry, with a login made in the run (``docker login``)."""
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
    return isolation.shell(
        source=source_root(workdir),
        run_id="local",
        stack=overrides.get("STACK_NAME", "local"),
        login=None,
        artifacts=artifacts,
        push_elsewhere=True,
    )


def source_root(workdir: Path) -> Path:
    """The git work tree that holds ``workdir`` (it has a ``.git``), else ``workdir``."""
    for directory in (workdir, *workdir.parents):
        if (directory / ".git").exists():
            return directory
    return workdir


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
