"""``/api/v1/stacks/{name}/logs``: every log, read whole or followed live (server-sent events).

Build, release, deployment and run logs are files the platform wrote (already masked);
task logs come from the engine and are masked here, on the way out.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from stackyard import changes
from stackyard.api.logs import GONE
from stackyard.api.routes.builds import services
from stackyard.deploy.records import TERMINAL as DEPLOYMENT_DONE
from stackyard.deploy.service import AccessRecord
from stackyard.errors import StackyardError, UsageError
from stackyard.pipeline.builds import TERMINAL as BUILD_DONE
from stackyard.pipeline.runs import TERMINAL as RUN_DONE
from stackyard.pipeline.services import Services

router = APIRouter(prefix="/stacks/{name}", tags=["logs"])

Kind = Literal["build", "release", "deployment", "run"]
POLL = 0.2  # the longest a follower waits before looking again, woken or not
HEARTBEAT = 15.0


def _event(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _source(
    found: Services, name: str, kind: Kind, number: int, stage: str | None
) -> tuple[str, Callable[[], bool]]:
    """The log file of one build, release, deployment or run, and whether it has ended."""
    if kind in ("release", "deployment") and not stage:
        raise UsageError(f"a {kind} log needs a stage (stage=...)")
    if kind == "build":
        path = found.builds.get(name, number).log_path
        return path, lambda: found.builds.get(name, number).status in BUILD_DONE
    if kind == "release":
        return found.releases.get(name, str(stage), number).log_path, lambda: True
    if kind == "deployment":
        path = found.deploy.get(name, str(stage), number).log_path
        return path, lambda: found.deploy.get(name, str(stage), number).status in DEPLOYMENT_DONE
    path = found.runs.get(name, number).log_path
    return path, lambda: found.runs.get(name, number).status in RUN_DONE


def follow_file(path: str, finished: Callable[[], bool]) -> Iterator[str]:
    """SSE events for each line of ``path`` as it grows, then ``end`` once finished."""
    offset, partial, quiet, ask = 0, b"", 0.0, True
    while True:
        seen = changes.generation(path)
        # The store says whether it ended; it is asked at first, when the end was signalled,
        # and after a quiet POLL, not after every line. Decided before reading, so the last
        # lines are never missed.
        done = (ask or changes.ended(path)) and finished()
        data = b""
        if Path(path).is_file():
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        offset += len(data)
        *lines, partial = (partial + data).split(b"\n")
        for line in lines:
            yield _event("line", line.decode("utf-8", "replace"))
        if done:
            if not data:
                if partial:
                    yield _event("line", partial.decode("utf-8", "replace"))
                yield _event("end", "")
                return
            ask = True
            continue  # it ended: read what is left at once, then say so
        if quiet >= HEARTBEAT:
            quiet = 0.0
            yield ": keep-alive\n\n"
        moved = changes.wait(path, seen, POLL)  # the next line or the end wakes this
        ask = not moved
        quiet = 0.0 if data else quiet + (0.0 if moved else POLL)


@router.get("/logs")
def logs(
    name: str,
    kind: Kind,
    number: int,
    request: Request,
    stage: str | None = None,
    follow: bool = False,
) -> StreamingResponse:
    """A whole log (text/plain), or with ``follow=true`` a live SSE stream of its lines."""
    path, finished = _source(services(request), name, kind, number, stage)
    if follow:
        return StreamingResponse(follow_file(path, finished), media_type="text/event-stream")
    if Path(path).is_file():
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    else:
        text = GONE if path and finished() else ""
    return StreamingResponse(iter([text]), media_type="text/plain; charset=utf-8")


def _check_tail(tail: int) -> None:
    if tail < 0:
        raise UsageError(
            f"--tail {tail}: give how many lines to start with, 0 or more",
            hint="e.g. --tail 20, or --tail 0 -f for new lines only",
        )


@router.get("/stages/{stage}/tasks/logs")
def task_logs(
    name: str, stage: str, request: Request, tail: int = 100, follow: bool = False
) -> StreamingResponse:
    """The stage's task logs, each line prefixed by its task; secrets masked."""
    _check_tail(tail)
    found = services(request)
    tasks = found.deploy.tasks(name, stage)
    masker = found.secrets.masker(name)
    lines: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=10_000)
    streams: list[Callable[[], None]] = []  # each open log's close
    gone = threading.Event()  # the reader went away: the pumps stop

    def pump(task_id: str, label: str) -> None:
        try:
            with found.deploy.task_logs(task_id, tail=tail, follow=follow) as log:
                streams.append(log.close)
                if gone.is_set():  # the reader left while this one was opening
                    return
                for line in log:
                    lines.put((label, line))
        except StackyardError as exc:  # e.g. the task went away: say so in the stream
            lines.put((label, f"(no more lines: {exc.message})"))
        finally:
            lines.put(None)

    for task in tasks:
        label = task.id[:12]
        threading.Thread(
            target=pump, args=(task.id, label), name=f"logs-{label}", daemon=True
        ).start()

    def events() -> Iterator[str]:
        # The queue is read with a heartbeat's bound: a reader that went away is noticed
        # at the next keep-alive at the latest (this generator is then dropped, and its
        # end closes every task's log, which ends its pump and lets go of its engine
        # connection); a followed stage whose tasks say nothing holds neither.
        open_streams = len(tasks)
        try:
            while open_streams:
                try:
                    item = lines.get(timeout=HEARTBEAT)
                except queue.Empty:
                    if follow:
                        yield ": keep-alive\n\n"
                    continue
                if item is None:
                    open_streams -= 1
                    continue
                label, line = item
                text = f"[{label}] {masker.mask(line)}"
                yield _event("line", text) if follow else text + "\n"
            if follow:
                yield _event("end", "")
        finally:
            gone.set()
            for close in list(streams):
                close()
            while not lines.empty():  # a pump blocked on a full queue goes on to its end
                lines.get_nowait()

    media = "text/event-stream" if follow else "text/plain; charset=utf-8"
    return StreamingResponse(events(), media_type=media)


def access_line(record: AccessRecord) -> str:
    """One request: time, method, path, status, duration, bytes, client."""
    when = datetime.fromtimestamp(record.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"{when[:-4]}Z {record.method} {record.host}{record.uri} {record.status} "
        f"{record.duration * 1000:.1f}ms {record.size}B {record.client}"
    )


@router.get("/stages/{stage}/access/logs")
def access_logs(
    name: str, stage: str, request: Request, tail: int = 100, follow: bool = False
) -> StreamingResponse:
    """The stage's requests as the router logged them (its access log); secrets masked,
    as in every other log (a token in a query string is one)."""
    _check_tail(tail)
    found = services(request)
    masker = found.secrets.masker(name)
    records = found.deploy.access_records(name, stage)
    first = records[-tail:] if tail > 0 else []

    def events() -> Iterator[str]:
        seen = records[-1].ts if records else 0.0
        for record in first:
            line = masker.mask(access_line(record))
            yield _event("line", line) if follow else line + "\n"
        quiet = 0.0
        while follow:
            time.sleep(POLL)
            fresh = [r for r in found.deploy.access_records(name, stage) if r.ts > seen]
            for record in fresh:
                yield _event("line", masker.mask(access_line(record)))
            if fresh:
                seen, quiet = fresh[-1].ts, 0.0
            else:
                quiet += POLL
            if quiet >= HEARTBEAT:
                quiet = 0.0
                yield ": keep-alive\n\n"

    media = "text/event-stream" if follow else "text/plain; charset=utf-8"
    return StreamingResponse(events(), media_type=media)
