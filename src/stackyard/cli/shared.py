"""Options every command shares (``--data-dir``, ``--json``) and the settings they make."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackyard.settings import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="STACKYARD_DATA_DIR",
        help="Where state, logs and the admin token live \\[default: ~/.local/share/stackyard].",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def settings_for(data_dir: Path | None, **overrides: object) -> Settings:
    return Settings().with_overrides(data_dir=data_dir, **overrides)
