"""Read a stored log from an offset, so clients can follow it by polling."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

MAX_CHUNK = 256 * 1024
GONE = "(this log is gone: retention keeps the logs of the last N records; see `stackyard prune`)\n"


class LogChunk(BaseModel):
    text: str
    offset: int
    finished: bool


def read_log(path: str, offset: int, *, finished: bool) -> LogChunk:
    """Up to 256 KiB of ``path`` from byte ``offset``, ending at a line boundary."""
    log = Path(path)
    if not path or not log.is_file():
        text = GONE if path and finished and offset == 0 else ""
        return LogChunk(text=text, offset=offset, finished=finished)
    with log.open("rb") as handle:
        handle.seek(max(0, offset))
        data = handle.read(MAX_CHUNK)
    cut = data.rfind(b"\n") + 1
    data = data[:cut]
    # The log may still grow: report finished only once everything was read.
    done = finished and len(data) == 0
    return LogChunk(text=data.decode("utf-8", "replace"), offset=offset + len(data), finished=done)
