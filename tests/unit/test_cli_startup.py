"""The ``stackyard`` command starts without loading the services, the store or httpx."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from stackyard.buildspec.runner import DEFAULT_COMMAND_TIMEOUT
from stackyard.cli.buildspec import app as buildspec_app

HEAVY = [
    "httpx",
    "sqlalchemy",
    "pydantic",
    "yaml",
    "stackyard.api",
    "stackyard.pipeline",
    "stackyard.deploy",
    "stackyard.buildspec",
    "stackyard.config.stackfile",
    "stackyard.config.buildspec",
    "stackyard.images",
    "stackyard.platform.lifecycle",
    "stackyard.store",
]

PROBE = """
import json, sys
from stackyard.cli.main import app
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_cli_loads_no_heavy_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


def test_command_timeout_help_shows_the_runners_default() -> None:
    command = typer.main.get_command(buildspec_app)
    run = command.commands["run"]  # type: ignore[attr-defined]
    option = next(p for p in run.params if p.name == "command_timeout")
    assert float(option.show_default) == DEFAULT_COMMAND_TIMEOUT
