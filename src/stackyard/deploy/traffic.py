"""A stage's traffic in minute buckets, by the release that served it: requests, errors
(5xx) and latency percentiles, from the router's access log. DeployService.traffic calls
``traffic_minutes`` (pure) with the stage's requests and its completed deployments.

A request is labelled with the release the stage's latest COMPLETED deployment had put in
at the request's time; while a deployment runs, its requests count for the release it
replaces (docs/decisions.md, "Traffic by release").
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from stackyard.router.base import AccessRecord


@dataclass(frozen=True)
class Serving:
    """From ``since`` (unix time: the deployment's end) the stage served this release."""

    since: float
    release: int
    digest: str


class TrafficMinute(BaseModel):
    minute: datetime  # the minute's start, UTC
    release: int | None  # None: before any deployment completed
    digest: str
    requests: int
    errors: int  # answered 5xx
    p50_ms: float
    p95_ms: float


class StageTraffic(BaseModel):
    stage: str
    minutes: list[TrafficMinute]


class TrafficReport(BaseModel):
    stack: str
    since: datetime
    stages: list[StageTraffic]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-1] of non-empty ``sorted_values``."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def traffic_minutes(
    records: Sequence[AccessRecord], serving: Sequence[Serving], *, since: float
) -> list[TrafficMinute]:
    """The requests at or after ``since``, bucketed by (minute, release), oldest first.
    ``serving`` is in the order of ``since``; a request before the first one counts for
    the first release (the one that was being deployed), none without any."""
    starts = [s.since for s in serving]
    buckets: dict[tuple[int, int], list[AccessRecord]] = defaultdict(list)
    for record in records:
        if record.ts < since:
            continue
        index = max(bisect.bisect_right(starts, record.ts) - 1, 0) if serving else -1
        buckets[(int(record.ts // 60), index)].append(record)
    minutes: list[TrafficMinute] = []
    for (minute, index), found in sorted(buckets.items()):
        label = serving[index] if index >= 0 else None
        durations = sorted(r.duration * 1000 for r in found)
        minutes.append(
            TrafficMinute(
                minute=datetime.fromtimestamp(minute * 60, UTC),
                release=label.release if label else None,
                digest=label.digest if label else "",
                requests=len(found),
                errors=sum(1 for r in found if r.status >= 500),
                p50_ms=round(percentile(durations, 0.50), 1),
                p95_ms=round(percentile(durations, 0.95), 1),
            )
        )
    return minutes
