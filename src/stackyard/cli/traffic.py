"""``stackyard traffic``: a stack's requests per minute and release, by stage: count, per
status class, p50/p95/p99 latency, from the traffic store (minute buckets counted from the
router's access logs, kept 7 days)."""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote

import typer

from stackyard.access.durations import parse_duration
from stackyard.cli.client import ApiClient
from stackyard.cli.output import console, new_table, print_json
from stackyard.cli.shared import DataDir, Json, settings_for
from stackyard.errors import UsageError

Stack = Annotated[str, typer.Argument(help="The stack.", show_default=False)]
Stage = Annotated[str | None, typer.Option("--stage", help="Only this stage.")]
Minutes = Annotated[
    int | None,
    typer.Option(
        "--minutes",
        min=1,
        help="How far back, in minutes (up to the traffic retention) \\[default: 60].",
        show_default=False,
    ),
]
Since = Annotated[
    str | None,
    typer.Option("--since", help="How far back, as a duration, e.g. 90m, 1h, 2d (or --minutes)."),
]


def traffic(
    stack: Stack,
    stage: Stage = None,
    minutes: Minutes = None,
    since: Since = None,
    data_dir: DataDir = None,
    json_output: Json = False,
) -> None:
    """Requests per minute of each stage, labelled with the release (and digest) that
    served them: count, 2xx/3xx/4xx/5xx, p50, p95 and p99 latency (from log-scale bins:
    within 4.5 % of the exact value). Minutes without requests are left out."""
    minutes = _minutes(minutes, since)
    client = ApiClient.discover(settings_for(data_dir))
    params: dict[str, str | int] = {"minutes": minutes}
    if stage is not None:
        params["stage"] = stage
    found = client.get(f"/api/v1/stacks/{quote(stack)}/traffic", params=params)
    if json_output:
        print_json(found)
        return
    _print(found, minutes)


def _minutes(minutes: int | None, since: str | None) -> int:
    """How far back to look: ``--minutes``, or ``--since`` rounded up to whole minutes."""
    if since is None:
        return 60 if minutes is None else minutes
    if minutes is not None:
        raise UsageError(
            "give --minutes or --since, not both", hint="e.g. --since 1h or --minutes 60"
        )
    return math.ceil(parse_duration(since, "--since").total_seconds() / 60)


def _print(found: dict[str, Any], minutes: int) -> None:
    stages = [s for s in found["stages"] if s["minutes"]]
    if not stages:
        console.print(f"No requests to {found['stack']} in the last {minutes} minutes.")
        return
    table = new_table(
        "STAGE", "MINUTE (UTC)", "RELEASE", "REQUESTS", "2XX", "3XX", "4XX", "5XX",
        "P50", "P95", "P99",
    )  # fmt: skip
    for each in stages:
        for row in each["minutes"]:
            table.add_row(
                each["stage"],
                str(row["minute"])[:16].replace("T", " "),
                "-" if row["release"] is None else str(row["release"]),
                str(row["requests"]),
                str(row["status_2xx"]),
                str(row["status_3xx"]),
                str(row["status_4xx"]),
                str(row["errors"]),
                f"{row['p50_ms']:.1f} ms",
                f"{row['p95_ms']:.1f} ms",
                f"{row['p99_ms']:.1f} ms",
            )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("traffic")(traffic)
