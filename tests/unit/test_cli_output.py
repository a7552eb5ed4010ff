"""What the CLI prints quotes users and apps as written: rich markup in a table cell (a
deployment's reason ends with the app's own log lines) is text, not a style."""

from __future__ import annotations

import io

from rich.console import Console

from stackyard.cli.output import new_table

APP_SAID = "boom: [error] GET [/api/items] 500 [bold]"


def test_a_table_cell_prints_brackets_as_written() -> None:
    """Before, rich dropped `[error]` and `[bold]` and failed the whole command on
    `[/api/items]` ("closing tag … doesn't match any open tag")."""
    table = new_table("DEPLOYMENT", "REASON", box=None)
    table.add_row("4", APP_SAID)
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    assert APP_SAID in out.getvalue()
