"""The traffic store: the real caddy router's access log reader and the traffic counter
over real log files (written here as Caddy writes them) and a real SQLite state database.
Counts match a known request mix exactly; a log rolled over in the middle of a read, a
restart of the control plane and a file replaced under the same inode neither lose nor
repeat a line; buckets past the retention are pruned."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from stackyard.deploy.ticker import Ticker
from stackyard.deploy.traffic import ERROR_BOUND, TrafficMinute, percentile
from stackyard.deploy.trafficstore import TrafficCounter
from stackyard.errors import ComponentError, UsageError
from stackyard.router.accesslog import follow, log_files
from stackyard.router.base import LogPosition
from stackyard.router.caddy import ACCESS_HOSTS, CaddyRouter, access_logger
from stackyard.store.models import AccessLogPosition, Deployment, StageRoute, TrafficBucket
from tests.gate_runs import BOUND
from tests.unit.controller_fixtures import STACK, Yard, make_yard

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()  # a minute's start
V1, V2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
PORT_LOGGER = access_logger(f"{STACK}-api")


def caddy_line(
    ts: float,
    *,
    host: str = "shop.test",
    status: int = 200,
    ms: float = 10.0,
    logger: str = ACCESS_HOSTS,
    uri: str = "/",
) -> str:
    """One access log entry in the shape Caddy 2.6 writes (the fields we read and more)."""
    entry = {
        "level": "info",
        "ts": ts,
        "logger": f"http.log.access.{logger}",
        "msg": "handled request",
        "request": {"remote_ip": "127.0.0.1", "proto": "HTTP/1.1", "method": "GET",
                    "host": host, "uri": uri, "headers": {"User-Agent": ["test"]}},
        "duration": ms / 1000,
        "size": 2,
        "status": status,
    }  # fmt: skip
    return json.dumps(entry) + "\n"


class Logs:
    """Two Caddies' access log directories, next to their (absent) admin sockets."""

    def __init__(self, tmp: Path) -> None:
        self.sockets = [tmp / "run" / "caddy-1.sock", tmp / "run" / "caddy-2.sock"]
        for socket in self.sockets:
            socket.with_name(f"{socket.stem}-access").mkdir(parents=True)
        self.tmp = tmp

    def path(self, caddy: int, logger: str = ACCESS_HOSTS) -> Path:
        socket = self.sockets[caddy]
        return socket.with_name(f"{socket.stem}-access") / f"{logger}.log"

    def write(self, caddy: int, *lines: str, logger: str = ACCESS_HOSTS) -> None:
        with self.path(caddy, logger).open("a", encoding="utf-8") as log:
            log.write("".join(lines))

    def roll(self, caddy: int, stamp: str, logger: str = ACCESS_HOSTS) -> Path:
        """What Caddy's roller does: rename the current file, then open a new one."""
        rolled = self.path(caddy, logger).with_name(f"{logger}-{stamp}.log")
        self.path(caddy, logger).rename(rolled)
        self.path(caddy, logger).touch()
        return rolled

    def router(self) -> CaddyRouter:
        return CaddyRouter(self.sockets, self.tmp / "run" / "directory.sock")


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    yield from make_yard(tmp_path)


@pytest.fixture
def logs(yard: Yard) -> Logs:
    """Stage dev on shop.test (and www.shop.test), stage api on port 18123; release 1 served
    dev until 12:01:30, release 2 after."""
    with yard.sessions.begin() as session:
        session.add(StageRoute(stack_id=yard.stack_id, stage="dev", host="shop.test",
                               aliases=["www.shop.test"]))  # fmt: skip
        session.add(StageRoute(stack_id=yard.stack_id, stage="api", port=18123))
        for number, (release, digest, end) in enumerate(
            [(1, V1, T0 - 3600), (2, V2, T0 + 90)], start=1
        ):
            session.add(Deployment(stack_id=yard.stack_id, stage="dev", number=number,
                                   release_number=release, digest=digest, status="COMPLETED",
                                   finished_at=datetime.fromtimestamp(end, UTC)))  # fmt: skip
    return Logs(yard.tmp)


def counter(yard: Yard, logs: Logs, **options: float) -> TrafficCounter:
    return TrafficCounter(yard.sessions, logs.router(), interval=0, clock=lambda: T0 + 300,
                          **options)  # type: ignore[arg-type]  # fmt: skip


def totals(yard: Yard, stage: str = "dev") -> dict[tuple[str, int], tuple[int, int, int, int, int]]:
    """(minute, release) -> requests, 2xx, 3xx, 4xx, 5xx of a stage."""
    found = counter_minutes(yard, stage)
    return {
        (m.minute.strftime("%H:%M"), m.release or 0): (
            m.requests,
            m.status_2xx,
            m.status_3xx,
            m.status_4xx,
            m.errors,
        )
        for m in found
    }


def counter_minutes(yard: Yard, stage: str) -> list[TrafficMinute]:
    reader = TrafficCounter(yard.sessions, yard.router, interval=0)
    return reader.minutes(yard.stack_id, stage, 0)


def test_counts_exactly_match_a_known_request_mix(yard: Yard, logs: Logs) -> None:
    mix = [caddy_line(T0 + n, ms=n + 1) for n in range(20)]  # 12:00, release 1, 1..20 ms
    mix += [
        caddy_line(T0 + 21, host="www.shop.test:8080", status=404, ms=5),  # an alias, a port
        caddy_line(T0 + 22, host="SHOP.test", status=502, ms=100),
        caddy_line(T0 + 23, host="other.test"),  # no stage of ours
        caddy_line(T0 + 24, uri="/.well-known/acme-challenge/x"),  # the CA's, not the app's
        caddy_line(T0 + 95, status=301),  # 12:01, release 2
    ]
    logs.write(0, *mix[:12])
    logs.write(1, *mix[12:])  # the other Caddy served the rest
    logs.write(0, caddy_line(T0 + 61, host="127.0.0.1:18123", status=201, logger=PORT_LOGGER),
               caddy_line(T0 + 62, host="shop.test", status=500, logger=PORT_LOGGER),
               logger=PORT_LOGGER)  # fmt: skip
    logs.write(1, "{torn line, still being written")
    assert counter(yard, logs).count() == 26  # every whole line, ours or not
    assert totals(yard) == {("12:00", 1): (22, 20, 0, 1, 1), ("12:01", 2): (1, 0, 1, 0, 0)}
    # The port route's requests are those of its own logger, whatever their host.
    assert totals(yard, "api") == {("12:01", 0): (2, 1, 0, 0, 1)}
    [first, _] = counter_minutes(yard, "dev")
    exact = sorted([*(float(n + 1) for n in range(20)), 5.0, 100.0])
    for q, shown in ((0.5, first.p50_ms), (0.95, first.p95_ms), (0.99, first.p99_ms)):
        assert abs(shown - percentile(exact, q)) <= percentile(exact, q) * ERROR_BOUND + 0.0005
    assert first.digest == V1


def test_a_log_rolled_over_in_the_middle_of_a_read_loses_and_repeats_nothing(
    yard: Yard, logs: Logs
) -> None:
    count = counter(yard, logs)
    logs.write(0, *(caddy_line(T0 + n) for n in range(5)))
    half = caddy_line(T0 + 5)
    logs.write(0, half[:40])  # Caddy is writing a line when we read
    assert count.count() == 5
    logs.write(0, half[40:], caddy_line(T0 + 6))  # the line ends, one more, then it rolls
    rolled = logs.roll(0, "2026-11-27T12-00-07.000")
    logs.write(0, caddy_line(T0 + 7), caddy_line(T0 + 8, status=503))
    assert count.count() == 4
    assert totals(yard) == {("12:00", 1): (9, 8, 0, 0, 1)}
    rolled.unlink()  # roll_keep removes it: its position is forgotten, nothing recounted
    logs.write(0, caddy_line(T0 + 9))
    assert count.count() == 1
    assert totals(yard) == {("12:00", 1): (10, 9, 0, 0, 1)}
    with yard.sessions() as session:
        kept = session.scalars(select(AccessLogPosition.path)).all()
    assert rolled.name not in {Path(p).name for p in kept}


def test_a_restarted_control_plane_counts_nothing_twice(yard: Yard, logs: Logs) -> None:
    logs.write(0, *(caddy_line(T0 + n) for n in range(3)))
    logs.write(1, caddy_line(T0 + 3))
    assert counter(yard, logs).count() == 4
    again = counter(yard, logs)  # a new control plane: new router, counter, same database
    assert again.count() == 0
    logs.write(1, caddy_line(T0 + 4, status=404))
    assert again.count() == 1
    assert totals(yard) == {("12:00", 1): (5, 4, 0, 1, 0)}


def test_a_file_replaced_under_its_name_is_read_from_its_start(yard: Yard, logs: Logs) -> None:
    count = counter(yard, logs)
    logs.write(0, *(caddy_line(T0 + n) for n in range(4)))
    assert count.count() == 4
    path = logs.path(0)
    with path.open("w", encoding="utf-8") as log:  # same inode, new content (truncated)
        log.write(caddy_line(T0 + 10, status=500))
    assert count.count() == 1
    os.truncate(path, 0)  # emptied, then a longer first line than before
    logs.write(0, caddy_line(T0 + 11, host="www.shop.test", uri="/" + "x" * 200))
    assert count.count() == 1
    assert totals(yard) == {("12:00", 1): (6, 5, 0, 0, 1)}


def test_reads_stop_at_the_limit_and_go_on_from_there(logs: Logs) -> None:
    logs.write(0, *(caddy_line(T0 + n) for n in range(10)))
    logs.write(1, *(caddy_line(T0 + n) for n in range(10, 20)))
    files = log_files(s.with_name(f"{s.stem}-access") for s in logs.sockets)
    size = len(caddy_line(T0))
    seen: list[float] = []
    positions: tuple[LogPosition, ...] = ()
    for _ in range(10):
        batch = follow(files, positions, limit=size * 3 + 5)
        seen += [r.ts for r in batch.records]
        positions = batch.positions
        if not batch.more:
            break
    assert sorted(seen) == [T0 + n for n in range(20)]


def test_buckets_past_the_retention_are_pruned(yard: Yard, logs: Logs) -> None:
    day = 86400
    logs.write(0, caddy_line(T0 - 8 * day), caddy_line(T0 - 6 * day), caddy_line(T0))
    count = counter(yard, logs)
    assert count.count() == 3
    assert count.prune() == 1  # 8 days old; 6 days and now are kept
    assert [m.requests for m in counter_minutes(yard, "dev")] == [1, 1]
    with yard.sessions() as session:
        oldest = session.scalar(select(func.min(TrafficBucket.minute)))
    assert oldest == int((T0 - 6 * day) // 60)
    longer = counter(yard, logs, retention_days=10)
    logs.write(0, caddy_line(T0 - 9 * day))
    assert longer.count() == 1
    assert longer.prune() == 0
    with pytest.raises(UsageError, match="6 days is too short"):
        counter(yard, logs, retention_days=6)


def test_the_counter_thread_gives_way_to_busier_processes() -> None:
    """The ticker the counter runs on sets its own thread's nice value (Linux)."""
    seen: list[int] = []
    ticked = threading.Event()

    def work() -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        ticked.set()

    ticker = Ticker("nice-test", "testing", 0.01, work, nice=19)
    ticker.start()
    try:
        assert ticked.wait(BOUND), "the ticker never ran"
    finally:
        ticker.stop()
    assert seen[0] == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19  # only its own


def test_an_unreadable_log_is_a_clear_error_and_counts_nothing(yard: Yard, logs: Logs) -> None:
    logs.write(0, caddy_line(T0))
    strange = logs.path(1, "sy-access-odd")
    strange.mkdir()  # not a file: it cannot be read, whoever we are
    with pytest.raises(ComponentError, match=r"cannot read the access log .*sy-access-odd\.log"):
        counter(yard, logs).count()
    assert totals(yard) == {}  # the whole batch is rolled back, positions too
    strange.rmdir()
    assert counter(yard, logs).count() == 1


def test_a_file_renamed_after_the_listing_is_read_on_next_time(logs: Logs) -> None:
    """Caddy rolls between the reader's listing and its opening of the file: the name opens
    the new file, and the rolled one's position must survive until it is read on."""
    logs.write(0, *(caddy_line(T0 + n) for n in range(3)))
    current = logs.path(0)
    first = follow([current], ())
    logs.write(0, caddy_line(T0 + 3), caddy_line(T0 + 4))  # written before the roll
    logs.roll(0, "2026-11-27T12-00-05.000")
    logs.write(0, caddy_line(T0 + 5))
    listed_before_the_roll = [current]  # the name now opens the new file
    second = follow(listed_before_the_roll, first.positions)
    third = follow(log_files([current.parent]), second.positions)
    seen = [r.ts for batch in (first, second, third) for r in batch.records]
    assert sorted(seen) == [T0 + n for n in range(6)]  # each line once
