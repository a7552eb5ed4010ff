"""The ``stackyard`` command as a click group whose commands are made only when asked for.

Typer makes the click command of every one of an app's commands before it runs one: it
reads each function's parameters and evaluates their annotations, about 70 commands,
some 200 ms of every ``stackyard`` call (``--version`` included) before anything it
asked for. ``lazy_group`` makes the top-level group with the app's own callback and
options, and makes a command (or a group: ``stacks``, ``nodes``, …) the first time click
asks for it by name: running one command makes one; ``--help`` and completing a command's
name make them all, as before.

The app itself is unchanged: the CLI reference (scripts/gen-cli-reference) and the tests'
``CliRunner`` read all of it, as Typer makes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import typer
from typer import main as typer_main
from typer._click.core import Command, Context  # Typer's own copy of click
from typer.core import TyperGroup

Maker = Callable[[], Command]


class LazyGroup(TyperGroup):
    """A TyperGroup whose commands are made on first use, listed in the app's order."""

    makers: dict[str, Maker]

    def list_commands(self, ctx: Context) -> list[str]:
        return [*self.commands, *(name for name in self.makers if name not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        maker = self.makers.pop(cmd_name, None)
        if maker is not None:
            self.commands[cmd_name] = maker()
        return super().get_command(ctx, cmd_name)


def lazy_group(app: typer.Typer) -> LazyGroup:
    """``app`` as a click group that makes each of its commands when asked for it."""
    shell = typer.Typer(
        cls=LazyGroup,
        name=app.info.name,
        help=app.info.help,
        no_args_is_help=app.info.no_args_is_help,
        pretty_exceptions_enable=app.pretty_exceptions_enable,
        add_completion=app._add_completion,
    )
    shell.registered_callback = app.registered_callback
    group = typer_main.get_command(shell)
    assert isinstance(group, LazyGroup)
    makers: dict[str, Maker] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or typer_main.get_command_name(command.callback.__name__)
        makers[name] = partial(
            typer_main.get_command_from_info,
            command,
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode,
        )
    for info in app.registered_groups:
        assert isinstance(info.name, str), "every command group of the app has a name"
        makers[info.name] = partial(
            typer_main.get_group_from_info,
            info,
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode,
            suggest_commands=app.suggest_commands,
        )
    group.makers = makers
    return group


def one_line_paragraphs(app: typer.Typer) -> typer.Typer:
    """Give every command of ``app`` (and of its groups) its help with each paragraph on
    one line. Typer's rich help keeps a docstring's single line breaks, so a docstring
    wrapped at 88 columns showed ragged at any terminal width, in `--help` and in the
    command lists; blank lines (paragraphs) stay."""
    for command in app.registered_commands:
        text = command.help if command.help is not None else inspect.getdoc(command.callback)
        if text:
            command.help = _joined(text)
    for group in app.registered_groups:
        if isinstance(group.help, str):
            group.help = _joined(group.help)
        if isinstance(group.typer_instance, typer.Typer):
            sub = group.typer_instance
            if isinstance(sub.info.help, str):
                sub.info.help = _joined(sub.info.help)
            one_line_paragraphs(sub)
    return app


def _joined(text: str) -> str:
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.split("\n")) for p in paragraphs)
