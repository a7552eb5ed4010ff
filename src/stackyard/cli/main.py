"""The ``stackyard`` command: one Typer app that gathers every command group."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from stackyard import __version__
from stackyard.cli import audit as audit_commands
from stackyard.cli import backup as backup_commands
from stackyard.cli import builds as build_commands
from stackyard.cli import buildspec as buildspec_commands
from stackyard.cli import config as config_commands
from stackyard.cli import deployments as deployment_commands
from stackyard.cli import dockerize as dockerize_commands
from stackyard.cli import doctor as doctor_commands
from stackyard.cli import domains as domain_commands
from stackyard.cli import logs as log_commands
from stackyard.cli import nodes as node_commands
from stackyard.cli import notify as notify_commands
from stackyard.cli import people as people_commands
from stackyard.cli import platform as platform_commands
from stackyard.cli import registries as registry_commands
from stackyard.cli import releases as release_commands
from stackyard.cli import retention as retention_commands
from stackyard.cli import runs as run_commands
from stackyard.cli import service as service_commands
from stackyard.cli import stacks as stack_commands
from stackyard.cli import stages as stage_commands
from stackyard.cli import targets as target_commands
from stackyard.cli import traffic as traffic_commands
from stackyard.cli import triggers as trigger_commands
from stackyard.cli import variables as variable_commands
from stackyard.cli.lazy import lazy_group, one_line_paragraphs
from stackyard.cli.output import run_cli

app = typer.Typer(
    name="stackyard",
    help="Self-hosted push-to-deploy: build an image once, promote its digest through stages.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config_commands.app, name="config")
app.add_typer(buildspec_commands.app, name="buildspec")
app.add_typer(stack_commands.app, name="stacks")
app.add_typer(stage_commands.app, name="stages")
app.add_typer(notify_commands.app, name="notify")
app.add_typer(node_commands.app, name="nodes")
app.add_typer(service_commands.app, name="service")
platform_commands.register(app)
build_commands.register(app)
release_commands.register(app)
deployment_commands.register(app)
domain_commands.register(app)
traffic_commands.register(app)
run_commands.register(app)
log_commands.register(app)
dockerize_commands.register(app)
variable_commands.register(app)
trigger_commands.register(app)
people_commands.register(app)
audit_commands.register(app)
registry_commands.register(app)
target_commands.register(app)
retention_commands.register(app)
backup_commands.register(app)
doctor_commands.register(app)
one_line_paragraphs(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stackyard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors.", envvar="STACKYARD_DEBUG")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Stackyard command line."""
    if debug:
        import os

        os.environ["STACKYARD_DEBUG"] = "1"


def entrypoint() -> None:
    sys.exit(run_cli(lazy_group(app)))
