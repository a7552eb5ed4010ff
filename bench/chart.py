"""Charts for docs/: failed requests per rollout, by tool, from bench.zero_downtime's results.

Needs matplotlib (not a project dependency). Usage:
    .venv/bin/python -m bench.zero_downtime --runs 3 --json /tmp/zd.json
    .venv/bin/python -m bench.chart /tmp/zd.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "zero-downtime.png"


def zero_downtime_chart(by_tool: dict[str, dict[str, Any]], path: Path = IMAGE) -> Path:
    """A bar per tool: median failed requests (non-2xx + socket errors) per rollout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = [t for t in by_tool if "control" not in t]
    medians = [statistics.median(by_tool[t]["errors"]) for t in tools]
    per_1000 = [statistics.median(by_tool[t]["per_1000"]) for t in tools]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    colors = ["#2f7d32" if t == "Stackyard" else "#9e9e9e" for t in tools]
    bars = ax.bar([t.replace(" --", "\n--").replace("Swarm ", "Swarm\n") for t in tools],
                  medians, color=colors)  # fmt: skip
    for tool, bar, errors, rate in zip(tools, bars, medians, per_1000, strict=True):
        label = f"{errors:g}\n({rate:.1f} per 1000)"
        runs, on_v2 = len(by_tool[tool]["errors"]), by_tool[tool].get("on_v2")
        if on_v2 is not None and on_v2 < runs:
            label += f"\nv2 deployed in only {on_v2} of {runs} runs"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)  # fmt: skip
    ax.set_ylabel("failed requests per rollout (median)")
    ax.set_title("Failed requests during a v1 → v2 rollout under wrk load (32 connections, 10 s)")
    ax.title.set_fontsize(10)
    ax.set_ylim(0, max([*medians, 1]) * 1.25)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def summary_of(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_tool: dict[str, dict[str, Any]] = {}
    for run in raw["runs"]:
        wrk = run["wrk"]
        errors = wrk["non2xx"] + wrk["connect"] + wrk["read"] + wrk["write"] + wrk["timeout"]
        entry = by_tool.setdefault(run["tool"], {"errors": [], "per_1000": []})
        entry["errors"].append(errors)
        entry["per_1000"].append(1000 * errors / wrk["requests"] if wrk["requests"] else 0.0)
        entry["on_v2"] = entry.get("on_v2", 0) + (run["served_after"] == "v2")
    return by_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path, help="the --json file of bench.zero_downtime")
    parser.add_argument("--out", type=Path, default=IMAGE)
    args = parser.parse_args()
    print(zero_downtime_chart(summary_of(json.loads(args.results.read_text())), args.out))


if __name__ == "__main__":
    main()
