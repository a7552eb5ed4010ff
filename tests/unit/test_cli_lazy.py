"""The ``stackyard`` command makes only the command it runs (cli/lazy.py), and is the same
command as the Typer app it is made from: the same commands, options and help."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from rich.text import Text
from typer import main as typer_main
from typer._click.core import Command, Context  # Typer's own copy of click
from typer._click.exceptions import UsageError
from typer.core import TyperGroup as Group

from stackyard.cli.lazy import lazy_group
from stackyard.cli.main import app


def run(group: Command, *args: str) -> int:
    try:
        group.main(args=list(args), prog_name="stackyard", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    return 0


def eager() -> Group:
    made = typer_main.get_command(app)
    assert isinstance(made, Group)
    return made


def every_command() -> list[tuple[str, Command]]:
    """("stackyard secrets set", its command) for the app and every command under it."""
    context = Context(eager())
    found: list[tuple[str, Command]] = []

    def add(command: Command, path: str) -> None:
        found.append((path, command))
        if isinstance(command, Group):
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None
                add(sub, f"{path} {name}")

    add(eager(), "stackyard")
    return found


def test_running_one_command_makes_that_command_only() -> None:
    group = lazy_group(app)
    every = list(group.makers)
    assert run(group, "--version") == 0
    assert list(group.makers) == every  # nothing made
    assert run(group, "nodes", "--help") == 0
    assert [name for name in every if name not in group.makers] == ["nodes"]
    assert list(group.commands) == ["nodes"]


def test_it_lists_every_command_of_the_app_in_its_order() -> None:
    group = lazy_group(app)
    context = Context(group)
    full = eager()
    assert group.list_commands(context) == full.list_commands(context)


def test_each_command_has_the_options_the_app_gives_it() -> None:
    group = lazy_group(app)
    full = eager()
    context = Context(group)

    def shape(command: Command | None) -> object:
        assert command is not None
        subcommands = {}
        if isinstance(command, Group):
            subcommands = {n: shape(command.get_command(context, n)) for n in command.commands}
        options = [(p.name, tuple(p.opts), p.required) for p in command.params]
        return (command.name, command.help, options, subcommands)

    for name in full.list_commands(context):
        assert shape(group.get_command(context, name)) == shape(full.get_command(context, name))
    assert [(p.name, p.opts) for p in group.params] == [(p.name, p.opts) for p in full.params]
    assert group.makers == {}  # every command made once


def test_help_and_a_mistyped_command_read_as_the_apps(capsys: pytest.CaptureFixture[str]) -> None:
    said = []
    for group in (lazy_group(app), eager()):
        assert run(group, "--help") == 0
        with pytest.raises(UsageError) as refused:
            group.main(args=["stack"], prog_name="stackyard", standalone_mode=False)
        said.append((capsys.readouterr().out, refused.value.format_message()))
    assert said[0] == said[1]
    assert "No such command 'stack'" in said[0][1]
    assert "stacks" in said[0][0]


def test_a_command_that_asks_no_api_imports_no_http_client() -> None:
    """`--version`, `--help` and shell completion (a TAB) ask no API: the HTTP client's
    standard library (http.client, with ssl and email parsing) is imported when a command
    first asks, not when the command starts."""
    code = (
        "import sys; sys.argv[0] = 'stackyard'; from stackyard.cli.main import entrypoint\n"
        "try:\n    entrypoint()\nexcept SystemExit:\n    pass\n"
        "print('http.client' in sys.modules, file=sys.stderr)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, "--version"], capture_output=True, text=True, check=True
    )
    assert ran.stdout.startswith("stackyard ")
    assert ran.stderr.strip() == "False"


def test_every_help_paragraph_is_one_line_so_rich_wraps_it_to_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Typer's rich help keeps a docstring's single line breaks: a docstring wrapped at 88
    columns showed ragged lines at any other width (`stackyard --help` at 80 broke `up`'s
    line after "unless")."""
    every = [command.help for _, command in every_command() if command.help]
    assert len(every) > 80
    assert [h for h in every if any("\n" in p for p in h.split("\n\n"))] == []
    assert run(lazy_group(app), "--help") == 0
    listing = capsys.readouterr().out
    assert "the data plane (registry, Caddy, upstream responder)" in listing


def test_no_help_text_loses_words_to_rich_markup() -> None:
    """Rich reads `[word]` as a style tag and drops it: "A commit sha, tag or branch [the
    stack's branch]." showed as "A commit sha, tag or branch ." in `build --help`. Every
    help (commands and options) renders as written; a literal bracket is written `\\[`."""
    lost = []
    for path, command in every_command():
        texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
        for text in texts:
            if Text.from_markup(text).plain != text.replace("\\[", "["):
                lost.append(f"{path}: {text}")
    assert lost == []


def test_no_option_states_its_default_twice() -> None:
    """`targets add --help` said "from [local]. [default: local]": an option whose
    default Typer prints names it in its help text only when Typer does not."""
    twice = []
    for path, command in every_command():
        for param in command.params:
            shown = getattr(param, "show_default", False) and param.default not in (None, "")
            text = getattr(param, "help", None) or ""
            if shown and "\\[" in text:
                twice.append(f"{path} {param.name}: {text}")
    assert twice == []


@pytest.mark.parametrize(
    ("group", "shown"),
    [
        ("secrets", "list"),
        ("env", "list"),
        ("notify", "list"),
        ("stacks", "show"),
        ("stages", "list"),
    ],
)
def test_a_stack_where_a_command_goes_is_answered_with_the_command(group: str, shown: str) -> None:
    """`stackyard secrets hello` said only "No such command 'hello'"."""
    with pytest.raises(UsageError) as refused:
        lazy_group(app).main(args=[group, "hello"], prog_name="stackyard", standalone_mode=False)
    assert refused.value.format_message() == (
        f"No such command 'hello'. If hello is a stack: stackyard {group} {shown} hello"
    )
    with pytest.raises(UsageError) as typo:
        lazy_group(app).main(args=[group, "lst"], prog_name="stackyard", standalone_mode=False)
    assert "Did you mean 'list'" in typo.value.format_message()
    assert "is a stack" not in typo.value.format_message()
