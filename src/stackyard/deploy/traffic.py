"""A stage's traffic in minute buckets, by the release that served it: requests per status
class and latency percentiles. The traffic counter (deploy/trafficstore.py) folds the
router's access records into stored buckets with ``fold``; ``traffic_minutes`` turns
buckets into the rows `stackyard traffic`, the API and the console show.

Latency is kept as counts in log-scale bins (BINS_PER_DOUBLING per doubling of the
duration, from 1 µs), which add up across minutes and Caddies: a percentile over any range
comes from the summed bins. It is the middle (geometric) of the bin that holds the
nearest-rank request, so it is within ERROR_BOUND (4.4 %) of the exact nearest-rank value,
or 0.5 µs below 1 µs.

A request is labelled with the release the stage's latest COMPLETED deployment had put in
at the request's time; while a deployment runs, its requests count for the release it
replaces (docs/decisions.md, "Traffic by release").
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from stackyard.router.base import AccessRecord

BINS_PER_DOUBLING = 8
ERROR_BOUND = 2 ** (1 / (2 * BINS_PER_DOUBLING)) - 1  # a bin's middle to its edges

Owner = TypeVar("Owner", bound=Hashable)  # whose requests: a stage, e.g. (stack id, stage)


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
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    errors: int  # answered 5xx
    p50_ms: float
    p95_ms: float
    p99_ms: float = 0.0


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


def latency_bin(seconds: float) -> int:
    """The bin of a duration: 0 below 1 µs, then BINS_PER_DOUBLING bins per doubling."""
    micros = seconds * 1e6
    if micros < 1:
        return 0
    return math.floor(math.log2(micros) * BINS_PER_DOUBLING) + 1


def bin_ms(index: int) -> float:
    """The duration a bin stands for, in milliseconds: its geometric middle."""
    if index <= 0:
        return 0.0005
    return float(2 ** ((index - 0.5) / BINS_PER_DOUBLING) / 1000)


def binned_percentile(bins: Mapping[int, int], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-1] in ms of the durations counted in ``bins``
    (bin -> requests); 0 without any."""
    total = sum(bins.values())
    if total == 0:
        return 0.0
    rank, seen = max(1, math.ceil(q * total)), 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return bin_ms(index)
    return bin_ms(max(bins))  # not reached: seen ends at total >= rank


@dataclass
class Counts:
    """One bucket's requests: per status class and per latency bin."""

    digest: str = ""
    requests: int = 0
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    latency: dict[int, int] = field(default_factory=dict)

    def add(self, record: AccessRecord) -> None:
        self.requests += 1
        status_class = record.status // 100
        if status_class == 2:
            self.status_2xx += 1
        elif status_class == 3:
            self.status_3xx += 1
        elif status_class == 4:
            self.status_4xx += 1
        elif status_class == 5:
            self.status_5xx += 1
        index = latency_bin(record.duration)
        self.latency[index] = self.latency.get(index, 0) + 1

    def merge(self, other: Counts) -> None:
        self.digest = other.digest or self.digest
        self.requests += other.requests
        self.status_2xx += other.status_2xx
        self.status_3xx += other.status_3xx
        self.status_4xx += other.status_4xx
        self.status_5xx += other.status_5xx
        for index, count in other.latency.items():
            self.latency[index] = self.latency.get(index, 0) + count


@dataclass(frozen=True)
class BucketKey(Generic[Owner]):
    owner: Owner
    minute: int  # unix time // 60
    release: int  # 0: before any deployment completed


def release_at(
    serving: Sequence[Serving], ts: float, starts: Sequence[float] = ()
) -> Serving | None:
    """What served at ``ts``: the latest deployment completed by then; before the first
    one, the first (it was being deployed); None without any. ``starts``: the ``since``
    of each, when the caller has them already."""
    if not serving:
        return None
    index = bisect.bisect_right(starts or [s.since for s in serving], ts) - 1
    return serving[max(index, 0)]


def fold(
    records: Iterable[AccessRecord],
    owners: Mapping[tuple[str, str | None], Owner],
    serving: Mapping[Owner, Sequence[Serving]],
) -> dict[BucketKey[Owner], Counts]:
    """The records counted into minute buckets per owner and release. A record's owner is
    found by (logger, host without port), else (logger, None) — ``Router.access_keys``;
    records no owner has (a removed stage, another log) are left out."""
    buckets: dict[BucketKey[Owner], Counts] = {}
    starts = {owner: [s.since for s in each] for owner, each in serving.items()}
    for record in records:
        host = record.host.rsplit(":", 1)[0].lower() if record.host else ""
        owner = owners.get((record.logger, host), owners.get((record.logger, None)))
        if owner is None:
            continue
        label = release_at(serving.get(owner, ()), record.ts, starts.get(owner, ()))
        key = BucketKey(owner, int(record.ts // 60), label.release if label else 0)
        counts = buckets.get(key)
        if counts is None:
            counts = buckets[key] = Counts(digest=label.digest if label else "")
        counts.add(record)
    return buckets


def traffic_minute(minute: int, release: int, counts: Counts) -> TrafficMinute:
    """A bucket as `stackyard traffic` shows it."""
    return TrafficMinute(
        minute=datetime.fromtimestamp(minute * 60, UTC),
        release=release or None,
        digest=counts.digest,
        requests=counts.requests,
        status_2xx=counts.status_2xx,
        status_3xx=counts.status_3xx,
        status_4xx=counts.status_4xx,
        errors=counts.status_5xx,
        p50_ms=round(binned_percentile(counts.latency, 0.50), 3),
        p95_ms=round(binned_percentile(counts.latency, 0.95), 3),
        p99_ms=round(binned_percentile(counts.latency, 0.99), 3),
    )


def traffic_minutes(
    records: Sequence[AccessRecord], serving: Sequence[Serving], *, since: float
) -> list[TrafficMinute]:
    """One stage's requests at or after ``since`` (all taken as its own), bucketed by
    (minute, release), oldest first: ``fold`` and ``traffic_minute`` without a store."""
    mine = (r for r in records if r.ts >= since)
    owners: dict[tuple[str, str | None], str] = {(r.logger, None): "stage" for r in records}
    buckets = fold(mine, owners, {"stage": serving})
    return [
        traffic_minute(key.minute, key.release, counts)
        for key, counts in sorted(buckets.items(), key=lambda kv: (kv[0].minute, kv[0].release))
    ]
