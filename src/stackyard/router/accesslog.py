"""Reading Caddy's JSON access logs: each Caddy writes its own files (rolled by size), and
a route's requests are merged from all of them. CaddyRouter.access_records calls it."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stackyard.router.base import AccessRecord

# The CA's requests for a name's HTTP challenge: Caddy answers them, not the stage's app.
ACME_CHALLENGE = "/.well-known/acme-challenge/"


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
