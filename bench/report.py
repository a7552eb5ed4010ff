"""Write one benchmark's block into docs/benchmarks.md, between its own markers."""

from __future__ import annotations

import argparse
import platform
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

Results = TypeVar("Results")

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nFigures from `bench/`; each block is rewritten by its script.\n"


def machine() -> str:
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"


def update_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the block between ``<!-- bench:NAME -->`` markers."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{start}\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def bench_main(
    section: str,
    description: str | None,
    measure: Callable[[int], Results],
    report: Callable[[int, Results], str],
    *,
    runs: int = 5,
) -> None:
    """The command line of a benchmark: ``--runs N``, print the report, write it unless
    ``--no-write``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    body = report(args.runs, measure(args.runs))
    print(body)
    if not args.no_write:
        update_section(section, body)
