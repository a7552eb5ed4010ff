"""Reading Caddy's JSON access logs: each Caddy writes its own files (rolled by size), and
a route's requests are merged from all of them. CaddyRouter.access_records calls
``read_access``; CaddyRouter.access_since calls ``follow``, which reads every file on from
where the last read stopped (deploy/trafficstore.py keeps the positions).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stackyard.errors import ComponentError
from stackyard.router.base import AccessBatch, AccessRecord, LogPosition

# The CA's requests for a name's HTTP challenge: Caddy answers them, not the stage's app.
ACME_CHALLENGE = "/.well-known/acme-challenge/"
# Caddy names an access log's entries after the server's logger: http.log.access.<name>.
LOGGER_PREFIX = "http.log.access."
READ_LIMIT = 2 * 1024 * 1024  # bytes one ``follow`` reads at most, over all files


def access_dir(admin_socket: Path) -> Path:
    """Where the Caddy behind ``admin_socket`` writes its access logs."""
    return admin_socket.with_name(f"{admin_socket.stem}-access")


def _files(path: Path) -> list[Path]:
    """A log and the files it rolled over to (``name-<time>.log``), oldest first."""
    rolled = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))
    return [*rolled, path] if path.exists() else rolled


def parse(line: str) -> AccessRecord | None:
    """One access log line; None for a line that is not a request (a torn last line)."""
    try:
        entry: Any = json.loads(line)
        request = entry["request"]
        return AccessRecord(
            ts=float(entry["ts"]),
            method=str(request.get("method", "")),
            uri=str(request.get("uri", "")),
            host=str(request.get("host", "")),
            status=int(entry.get("status", 0)),
            duration=float(entry.get("duration", 0.0)),
            size=int(entry.get("size", 0)),
            client=str(request.get("remote_ip", "")),
            logger=str(entry.get("logger", "")).removeprefix(LOGGER_PREFIX),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _records(path: Path, hosts: Sequence[str] | None) -> Iterator[AccessRecord]:
    wanted = set(hosts) if hosts else None
    for each in _files(path):
        with each.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                record = parse(line)
                if record is None or record.uri.startswith(ACME_CHALLENGE):
                    continue
                if wanted is None or record.host.rsplit(":", 1)[0] in wanted:
                    yield record


def read_access(paths: Iterable[Path], *, hosts: Sequence[str] | None) -> list[AccessRecord]:
    """The requests of every log, merged by time; only those for ``hosts`` when given
    (the Host header without its port)."""
    return list(heapq.merge(*(_records(p, hosts) for p in paths), key=lambda r: r.ts))


def log_files(directories: Iterable[Path]) -> list[Path]:
    """Every access log file (current and rolled) in ``directories``."""
    return sorted(f for d in directories if d.is_dir() for f in d.glob("*.log"))


def _head(first_line: bytes) -> str:
    return hashlib.sha256(first_line).hexdigest()[:32] if first_line.endswith(b"\n") else ""


def follow(
    files: Sequence[Path], positions: Sequence[LogPosition], *, limit: int = READ_LIMIT
) -> AccessBatch:
    """The whole lines written to ``files`` after ``positions`` (a file not among them, or
    whose first line differs, from its start), at most ``limit`` bytes, and where each
    file stands after them. A torn last line is left for the next call; a file rolled
    over (renamed) keeps its identity, so it is read on from where it was. A file Caddy
    renamed after ``files`` were listed is not read this time (its name opens the new
    file): its position is kept while it is still in its directory, and it is read on
    next time; positions of files gone (roll_keep removed them) are dropped."""
    known = {(p.device, p.inode): p for p in positions}
    records: list[AccessRecord] = []
    after: list[LogPosition] = []
    budget, more = limit, False
    for path in files:
        try:
            with path.open("rb") as log:
                stat = os.fstat(log.fileno())
                head = _head(log.readline())
                before = known.get((stat.st_dev, stat.st_ino))
                offset = 0
                if before is not None and before.head == head and before.offset <= stat.st_size:
                    offset = before.offset
                log.seek(offset)
                chunk = log.read(max(budget, 0))
        except FileNotFoundError:  # removed by Caddy's roll_keep between listing and opening
            continue
        except OSError as exc:
            raise ComponentError(
                f"cannot read the access log {path}: {exc.strerror or exc}",
                hint="the control plane's user must be able to read the files Caddy writes "
                "under the data directory's run/ folder; check their owner and mode",
            ) from exc
        whole = chunk[: chunk.rfind(b"\n") + 1]
        # Stopped by the limit, not by the end of the file (or a torn last line).
        more = more or (len(chunk) >= budget and offset + len(chunk) < stat.st_size)
        budget -= len(whole)
        records.extend(_parsed(whole))
        after.append(LogPosition(str(path), stat.st_dev, stat.st_ino, head, offset + len(whole)))
    read = {(p.device, p.inode) for p in after}
    unread = {key: p for key, p in known.items() if key not in read}
    if unread:
        after += [unread[key] for key in _identities(f.parent for f in files) if key in unread]
    return AccessBatch(tuple(records), tuple(after), more)


def _identities(directories: Iterable[Path]) -> list[tuple[int, int]]:
    """(device, inode) of every log file in ``directories`` now."""
    found: list[tuple[int, int]] = []
    for path in log_files(set(directories)):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        found.append((stat.st_dev, stat.st_ino))
    return found


def _parsed(lines: bytes) -> Iterator[AccessRecord]:
    for line in lines.decode("utf-8", errors="replace").splitlines():
        record = parse(line)
        if record is not None and not record.uri.startswith(ACME_CHALLENGE):
            yield record
