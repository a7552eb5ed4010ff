"""Traffic in minute buckets by release: a known batch of requests gives exactly the counts,
errors and percentiles expected, each labelled with the release that served it; and the
route answers only those who may read the stack."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stackyard.cli.logs import _pick
from stackyard.cli.traffic import _minutes
from stackyard.deploy.traffic import (
    ERROR_BOUND,
    Counts,
    Serving,
    binned_percentile,
    latency_bin,
    percentile,
    traffic_minutes,
)
from stackyard.errors import UsageError
from stackyard.router.base import AccessRecord
from tests.access_yard import AccessYard, access_yard
from tests.gate_runs import BOUND

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()  # a minute's start
V1, V2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def request(at: float, status: int = 200, ms: float = 10.0) -> AccessRecord:
    return AccessRecord(at, "GET", "/", "shop.test", status, ms / 1000, 2, "127.0.0.1")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 21)]  # 1..20
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (10.0, 19.0)
    assert (percentile([7.0], 0.5), percentile([7.0], 0.95)) == (7.0, 7.0)


def within_bound(estimate: float, exact: float) -> bool:
    """The binned percentile's promise: within ERROR_BOUND of the exact one (plus the
    rounding to 0.001 ms of the figures shown)."""
    return abs(estimate - exact) <= exact * ERROR_BOUND + 0.0005


def test_percentiles_from_bins_are_within_the_bound_of_the_exact_ones() -> None:
    draw = random.Random(14)
    shapes = {
        "uniform": [draw.uniform(0.0005, 0.2) for _ in range(5000)],
        "long tail": [draw.lognormvariate(-4.5, 1.2) for _ in range(5000)],
        "two modes": [draw.choice((0.002, 0.9)) * draw.uniform(0.9, 1.1) for _ in range(999)],
        "one": [0.0123],
    }
    for name, durations in shapes.items():
        bins: dict[int, int] = {}
        for seconds in durations:
            bins[latency_bin(seconds)] = bins.get(latency_bin(seconds), 0) + 1
        exact = sorted(d * 1000 for d in durations)
        for q in (0.5, 0.95, 0.99):
            estimate = binned_percentile(bins, q)
            assert within_bound(estimate, percentile(exact, q)), (name, q, estimate)
    assert ERROR_BOUND < 0.045
    assert binned_percentile({}, 0.5) == 0.0


def test_summed_bins_give_the_percentiles_of_the_whole() -> None:
    """Minutes (and Caddies) merge: the bins of two halves add up to those of the whole."""
    draw = random.Random(7)
    records = [request(T0 + n, ms=draw.lognormvariate(2, 1)) for n in range(400)]
    first, second, whole = Counts(), Counts(), Counts()
    for n, record in enumerate(records):
        (first if n % 2 else second).add(record)
        whole.add(record)
    first.merge(second)
    assert first == whole


def test_a_known_batch_gives_exactly_its_counts_per_minute_and_release() -> None:
    # Release 1 served until 12:01:30, when release 2's deployment completed.
    serving = [Serving(T0 - 3600, 1, V1), Serving(T0 + 90, 2, V2)]
    batch = [
        request(T0 - 61),  # before `since`: left out
        *(request(T0 + n, ms=n + 1) for n in range(20)),  # 12:00, release 1, 1..20 ms
        request(T0 + 30, status=502, ms=100),
        request(T0 + 31, status=404, ms=5),  # a 4xx is no error of the stage
        request(T0 + 60, status=500),  # 12:01, still release 1
        request(T0 + 95, status=301),  # 12:01, release 2
        request(T0 + 96, status=503, ms=30),
        request(T0 + 130, ms=4),  # 12:02, release 2
    ]
    minutes = traffic_minutes(batch, serving, since=T0 - 60)
    rows = [
        (m.minute.strftime("%H:%M"), m.release, m.digest, m.requests, m.status_2xx,
         m.status_3xx, m.status_4xx, m.errors)
        for m in minutes
    ]  # fmt: skip
    assert rows == [
        ("12:00", 1, V1, 22, 20, 0, 1, 1),
        ("12:01", 1, V1, 1, 0, 0, 0, 1),
        ("12:01", 2, V2, 2, 0, 1, 0, 1),
        ("12:02", 2, V2, 1, 1, 0, 0, 0),
    ]
    exact = [(10.0, 20.0, 100.0), (10.0, 10.0, 10.0), (10.0, 30.0, 30.0), (4.0, 4.0, 4.0)]
    for minute, (p50, p95, p99) in zip(minutes, exact, strict=True):
        assert within_bound(minute.p50_ms, p50), minute
        assert within_bound(minute.p95_ms, p95), minute
        assert within_bound(minute.p99_ms, p99), minute


def test_requests_before_any_completed_deployment_count_for_the_first_release() -> None:
    minutes = traffic_minutes([request(T0)], [Serving(T0 + 10, 1, V1)], since=0)
    assert [(m.release, m.requests) for m in minutes] == [(1, 1)]
    unlabelled = traffic_minutes([request(T0)], [], since=0)
    assert [(m.release, m.digest, m.requests) for m in unlabelled] == [(None, "", 1)]


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[AccessYard]:
    with access_yard(tmp_path) as found:
        try:
            yield found
        finally:
            found.services.runs.shutdown(timeout=BOUND)


def test_traffic_is_read_by_readers_of_the_stack_only(yard: AccessYard) -> None:
    path = "/api/v1/stacks/{}/traffic"
    assert yard.client.get(path.format("hello")).status_code == 401
    wrong = {"Authorization": "Bearer sy_not-a-token"}
    assert yard.client.get(path.format("hello"), headers=wrong).status_code == 401
    for label in ("viewer", "read hello"):
        answer = yard.client.get(path.format("hello"), headers=yard.auth(label))
        assert answer.status_code == 200, (label, answer.text)
        assert answer.json()["stack"] == "hello"
    other = yard.client.get(path.format("other"), headers=yard.auth("read hello"))
    assert other.status_code == 403, other.text
    for label in ("push hello", "deploy hello"):  # another stack's tokens, any scope
        assert yard.client.get(path.format("other"), headers=yard.auth(label)).status_code == 403
    bad = yard.client.get(path.format("hello"), params={"minutes": 0}, headers=yard.auth("viewer"))
    assert bad.status_code == 400, bad.text
    assert "the last 0 minutes is out of range" in bad.text, bad.text


def test_traffic_since_is_a_duration_rounded_up_to_minutes() -> None:
    assert (_minutes(None, None), _minutes(5, None)) == (60, 5)
    assert (_minutes(None, "1h"), _minutes(None, "2d"), _minutes(None, "90s")) == (60, 2880, 2)
    with pytest.raises(UsageError, match="--since: 'xyz' is not a duration"):
        _minutes(None, "xyz")
    with pytest.raises(UsageError, match="not both"):
        _minutes(5, "1h")


def test_a_negative_tail_is_refused_naming_it(yard: AccessYard) -> None:
    for kind in ("access", "tasks"):
        answer = yard.client.get(
            f"/api/v1/stacks/hello/stages/dev/{kind}/logs",
            params={"tail": -3},
            headers=yard.auth("viewer"),
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "--tail -3: give how many lines to start with, 0 or more"


def test_logs_says_which_flags_clash_and_gives_a_whole_example() -> None:
    with pytest.raises(UsageError) as both:
        _pick(1, None, None, None, False, True)
    assert both.value.message.endswith("(not --build and --access at once)")
    assert _pick(None, 2, None, None, False, False) == ("release", 2)
    with pytest.raises(UsageError) as none:
        _pick(None, None, None, None, False, False)
    assert "at once" not in none.value.message
    assert "--stage alone shows the stage's task logs" in str(none.value.hint)
    # `logs hello --stage prod`: the app's own output, as `kamal app logs` gives it.
    assert _pick(None, None, None, None, False, False, "prod") == ("tasks", None)
    assert _pick(None, None, 4, None, False, False, "prod") == ("deployment", 4)
