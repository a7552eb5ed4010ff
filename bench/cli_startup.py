"""The `stackyard` command's start-up: wall time of a whole process, for commands that
ask no platform (`--version`, one command group's `--help`, shell completion of a
subcommand, the top-level `--help`).

Side by side in one run, interleaved: the command as installed (each command made by
Typer only when asked for, cli/lazy.py) against the same app run as Typer makes it (every
command made first: `run_cli(app)`), and against the floor (`python -c pass`: the
interpreter alone). The median of ``--runs`` runs of each; ratios, not absolute times.
Usage:
    .venv/bin/python -m bench.cli_startup [--runs 15] [--no-write]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from bench.report import bench_main

PYTHON = sys.executable
# argv[0] is "stackyard" for both: completion reads its variable's name from it.
NAMED = "import sys; sys.argv[0] = 'stackyard'; "
EAGER = NAMED + "from stackyard.cli.main import app; from stackyard.cli.output import run_cli; "
EAGER += "sys.exit(run_cli(app))"
LAZY = NAMED + "from stackyard.cli.main import entrypoint; entrypoint()"
COMPLETE = {"_STACKYARD_COMPLETE": "complete_bash", "COMP_WORDS": "stackyard stacks cr"}
CASES = {
    "--version": (["--version"], {}),
    "stacks --help": (["stacks", "--help"], {}),
    "stackyard stacks cr<TAB>": ([], {**COMPLETE, "COMP_CWORD": "2"}),
    "--help": (["--help"], {}),
}

Results = dict[str, dict[str, float]]


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def measure(runs: int) -> Results:
    found: dict[str, dict[str, list[float]]] = {}
    for _ in range(runs):
        floor = timed([PYTHON, "-c", "pass"], {})
        for case, (args, env) in CASES.items():
            times = found.setdefault(case, {"floor": [], "eager": [], "lazy": []})
            times["floor"].append(floor)
            times["eager"].append(timed([PYTHON, "-c", EAGER, *args], env))
            times["lazy"].append(timed([PYTHON, "-c", LAZY, *args], env))
    return {
        case: {side: statistics.median(values) for side, values in times.items()}
        for case, times in found.items()
    }


def report(runs: int, results: Results) -> str:
    lines = [
        "## CLI start-up",
        "",
        "`python -m bench.cli_startup`: wall time of one `stackyard` process (median of "
        f"{runs}, interleaved), each command made when asked for (lazy, as installed) "
        "against every command made first (eager: Typer's own way, before).",
        "",
        "| command | lazy (s) | eager (s) | lazy / eager | interpreter alone (s) |",
        "|---|---|---|---|---|",
    ]
    for case, side in results.items():
        lines.append(
            f"| `{case}` | {side['lazy']:.3f} | {side['eager']:.3f} | "
            f"{side['lazy'] / side['eager']:.2f} | {side['floor']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main("cli_startup", __doc__, measure, report, runs=15)
