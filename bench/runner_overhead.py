"""Per-command overhead of the buildspec runner against plain ``sh -c``, one process each.

Side by side in one run: N trivial commands (``true``, ``X=$((X+1))``) through the runner
(state dump, masking, log file) and through bare ``sh -c``. Usage:
    .venv/bin/python -m bench.runner_overhead [--commands 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import update_section
from stackyard.buildspec.environment import MINIMAL_PATH
from stackyard.buildspec.runner import RunSettings, run_buildspec
from stackyard.config.buildspec import load_buildspec

COMMANDS = ("true", "X=$((X+1))")


def spec_text(count: int, shell: str) -> str:
    lines = "".join(f"      - {json.dumps(COMMANDS[i % 2])}\n" for i in range(count))
    return f"version: 0.2\nenv:\n  shell: {shell}\nphases:\n  build:\n    commands:\n{lines}"


def through_runner(count: int, shell: str, workdir: Path) -> float:
    """Milliseconds per command through run_buildspec."""
    spec, _ = load_buildspec(spec_text(count, shell))
    settings = RunSettings(workdir=workdir, log_path=workdir / "bench.log")
    started = time.perf_counter()
    result = run_buildspec(spec, settings, sink=lambda _line: None)
    elapsed = time.perf_counter() - started
    if str(result.status) != "SUCCEEDED":
        raise SystemExit(f"the benchmark build failed; see {settings.log_path}")
    return elapsed * 1000 / count


def through_plain_shell(count: int, shell: str, workdir: Path) -> float:
    """Milliseconds per command through bare ``sh -c``, output piped like the runner's."""
    env = {"PATH": MINIMAL_PATH, "HOME": str(workdir)}
    started = time.perf_counter()
    for i in range(count):
        subprocess.run(
            [f"/bin/{shell}", "-c", COMMANDS[i % 2]],
            env=env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return (time.perf_counter() - started) * 1000 / count


def measure(count: int, repeat: int, shell: str) -> tuple[float, float]:
    """Median ms per command (runner, plain), alternating the two to share any noise."""
    runner, plain = [], []
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        for _ in range(repeat):
            runner.append(through_runner(count, shell, workdir))
            plain.append(through_plain_shell(count, shell, workdir))
    return statistics.median(runner), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = ["| shell | runner ms/command | plain `sh -c` ms/command | overhead ms/command |"]
    rows.append("|---|---|---|---|")
    for shell in ("sh", "bash"):
        runner, plain = measure(args.commands, args.repeat, shell)
        print(f"{shell}: runner {runner:.2f} ms, plain {plain:.2f} ms, +{runner - plain:.2f} ms")
        rows.append(f"| {shell} | {runner:.2f} | {plain:.2f} | {runner - plain:+.2f} |")
    body = (
        "## Buildspec runner: per-command overhead\n\n"
        f"{args.commands} trivial commands (`true`, `X=$((X+1))`), median of {args.repeat} "
        "runs. The runner adds the EXIT-trap state dump, reading it back, masking and the "
        "log file; the goal is under 5 ms per command.\n\n" + "\n".join(rows)
    )
    update_section("runner_overhead", body)


if __name__ == "__main__":
    main()
