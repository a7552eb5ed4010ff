"""``stackyard dockerize PATH``: show (or write) the Dockerfile Stackyard would generate.

main.py wires it in with ``register(app)``; the detection itself lives in images.dockerize.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stackyard.cli.output import console, print_json
from stackyard.errors import UsageError

if TYPE_CHECKING:
    from stackyard.images.dockerize import Detection


def dockerize(
    path: Annotated[
        Path, typer.Argument(help="The build context: a directory with the app's source.")
    ] = Path("."),
    write: Annotated[
        bool, typer.Option("--write", help="Write PATH/Dockerfile (never overwrites one).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Detect the app's framework and print the Dockerfile generated for it."""
    from stackyard.images.dockerize import detect  # here: other commands start without it

    if not path.is_dir():
        raise UsageError(f"{path} is not a directory", hint="pass the app's build context")
    target = path / "Dockerfile"
    if write and target.exists():
        raise UsageError(
            f"{target} already exists: not overwriting it",
            hint="the build uses that Dockerfile as it is; delete it first to generate one",
        )
    detection = detect(path)
    if write:
        target.write_text(detection.dockerfile, encoding="utf-8")
    if json_output:
        existing = target.exists() and not write
        print_json({**detection.to_dict(), "dockerfile_exists": existing})
        return
    _describe(detection, path, target if write else None)


def _describe(detection: Detection, path: Path, written: Path | None) -> None:
    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    existing = path / "Dockerfile"
    if written is None and existing.exists():
        say(f"note      {existing} exists: builds use it as it is, and not what follows")
    say(f"detected  {detection.kind}")
    if detection.files:
        say(f"  from    {', '.join(detection.files)}")
    for line in detection.evidence:
        say(f"  because {line}")
    for choice in detection.versions:
        say(f"version   {choice.version.language} {choice.version.line} ({choice.version.image})")
        say(f"  because {choice.reason}")
    for warning in detection.warnings:
        say(f"warning   {warning}")
    say(f"command   {detection.command}")
    if written is not None:
        say(f"wrote     {written}")
    console.print()
    console.print(detection.dockerfile, end="", highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``dockerize`` to the ``stackyard`` app."""
    app.command()(dockerize)
