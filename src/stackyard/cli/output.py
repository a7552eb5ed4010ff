"""How the CLI speaks: one clear error line with a hint, JSON when asked, no tracebacks.

Every command module uses these helpers, so all commands fail and print the same way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import typer

from stackyard.errors import StackyardError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    # Piped output is not cut at 80 columns: digests and shas stay whole for scripts and
    # logs. No :emoji: codes: a log line's ":name:" stays as written, and the 30 ms table
    # never loads.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200, emoji=False)


class _LazyConsole:
    """A rich Console made on first use: a command that prints JSON never imports rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(_console(self._stderr), name)


def real_console(screen: Console) -> Console:
    """The rich Console behind ``console`` or ``err_console``, for rich's own Live."""
    return _console(screen._stderr) if isinstance(screen, _LazyConsole) else screen


console: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def new_table(*headers: str, **options: Any) -> Table:
    """A rich Table whose text cells print as written (rich is imported here, when a
    command prints one). Cells quote what users and apps wrote (a deployment's reason ends
    with the app's last log lines): rich would read ``[error]`` in them as a style and drop
    it, and fail on ``[/api]`` ("closing tag … doesn't match any open tag")."""
    from rich.table import Table
    from rich.text import Text

    class PlainTable(Table):
        def add_row(self, *cells: Any, **kwargs: Any) -> None:
            super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)

    return PlainTable(*headers, **options)


def escape(text: str) -> str:
    """``text`` with rich markup escaped, so a log line prints as written."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (no colours, no wrapping)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def fail(error: StackyardError) -> int:
    # Messages quote user input and registry answers: "[/namespace]" is text, not markup.
    message = escape(error.message)
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if error.hint:
        hint = escape(error.hint)
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)
    return error.exit_code


def run_cli(app: Callable[..., Any]) -> int:
    """Run the Typer app (or its click command), turning StackyardError into a message
    and an exit status."""
    debug = os.environ.get("STACKYARD_DEBUG") == "1" or "--debug" in sys.argv
    try:
        # Without standalone mode, click returns the code of a `typer.Exit(n)`.
        result = app(standalone_mode=False)
    except StackyardError as exc:
        if debug:
            raise
        return fail(exc)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except typer.TyperException as exc:
        # Click's own errors (Typer carries its own copy of Click): a mistyped command or
        # option prints the usage line and the closest match, and exits 2.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {exc.format_message()}", highlight=False, markup=False)
        return int(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        # A bug in Stackyard: one line, and how to see more, never a bare traceback.
        return fail(
            StackyardError(
                f"internal error: {type(exc).__name__}: {exc}",
                hint="run the command again with --debug for the traceback, and please report it",
            )
        )
    return result if isinstance(result, int) else 0


def print_left(left: list[str], swept: list[str]) -> None:
    """What a deletion could not remove, one "Left …" line each; for those in ``swept``,
    that the platform removes them itself (its orphan sweep)."""
    for item in left:
        console.print(f"Left {item}", markup=False, highlight=False)
    if swept:
        console.print(
            "The platform removes the tasks and routes left once their engine or router "
            "answers (`stackyard doctor` lists the tasks meanwhile)."
        )
