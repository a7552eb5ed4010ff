"""``stackyard logs``: the log of a build, release, deployment, run, or a stage's tasks."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from stackyard.cli.client import ApiClient
from stackyard.cli.follow import follow_events
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import UsageError


def _pick(
    build: int | None,
    release: int | None,
    deployment: int | None,
    run: int | None,
    tasks: bool,
    access: bool = False,
    stage: str | None = None,
) -> tuple[str, int | None]:
    """Which log the options name; a stage alone names its task logs (the app's output,
    what `logs STACK --stage prod` is asked for most)."""
    chosen: list[tuple[str, int | None]] = [
        (kind, number)
        for kind, number in (
            ("build", build),
            ("release", release),
            ("deployment", deployment),
            ("run", run),
        )
        if number is not None
    ]
    if tasks:
        chosen.append(("tasks", None))
    if access:
        chosen.append(("access", None))
    if not chosen and stage:
        return ("tasks", None)
    if len(chosen) != 1:
        given = " and ".join(f"--{kind}" for kind, _ in chosen)
        raise UsageError(
            "say which log: one of --build N, --release N, --deployment N, --run N, --tasks "
            "or --access" + (f" (not {given} at once)" if given else ""),
            hint="e.g. stackyard logs hello --deployment 3 --stage prod -f; --stage alone "
            "shows the stage's task logs",
        )
    return chosen[0]


def _emit(line: str, as_json: bool) -> None:
    sys.stdout.write((json.dumps({"line": line}) if as_json else line) + "\n")
    sys.stdout.flush()


def logs(
    stack: str,
    build: Annotated[int | None, typer.Option("--build", help="A build's log.")] = None,
    release: Annotated[
        int | None, typer.Option("--release", help="A release's log (with --stage).")
    ] = None,
    deployment: Annotated[
        int | None, typer.Option("--deployment", help="A deployment's log (with --stage).")
    ] = None,
    run: Annotated[int | None, typer.Option("--run", help="A pipeline run's log.")] = None,
    tasks: Annotated[
        bool,
        typer.Option(
            "--tasks", help="The stage's task logs (with --stage; --stage alone means these)."
        ),
    ] = False,
    access: Annotated[
        bool,
        typer.Option(
            "--access",
            help="The stage's access log (with --stage): method, path, status, duration, "
            "bytes, client of each request.",
        ),
    ] = False,
    stage: Annotated[str | None, typer.Option("--stage", help="The stage.")] = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[
        int,
        typer.Option(min=0, help="With --tasks: lines per task to start with; --access: lines."),
    ] = 100,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Print a log (secrets masked); -f follows it live until it ends."""
    kind, number = _pick(build, release, deployment, run, tasks, access, stage)
    if kind in ("release", "deployment", "tasks", "access") and not stage:
        which = f"--{kind}" if number is None else f"--{kind} {number}"
        raise UsageError(
            f"{which} needs --stage", hint=f"e.g. stackyard logs {stack} {which} --stage dev"
        )
    client = ApiClient.discover(settings_for(data_dir))
    if kind in ("tasks", "access"):
        path = f"/api/v1/stacks/{stack}/stages/{stage}/{kind}/logs"
        params: dict[str, str | int | bool] = {"tail": tail, "follow": follow}
    else:
        path = f"/api/v1/stacks/{stack}/logs"
        params = {"kind": kind, "number": number or 0, "follow": follow}
        if stage:
            params["stage"] = stage
    if follow:
        follow_events(client, path, params, on_line=lambda line: _emit(line, json_output))
        return
    text = client.text(path, params=params)
    if not json_output:
        sys.stdout.write(text)
        return
    for line in text.splitlines():
        _emit(line, as_json=True)


def register(app: typer.Typer) -> None:
    app.command()(logs)
