"""The build log: every line of a run, masked, to a timestamped file and to an output sink.

The runner writes through :class:`BuildLog`; callers (the CLI, builds, releases) receive each
:class:`LogLine` through their sink to print or stream it elsewhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TextIO

from stackyard import changes
from stackyard.secrets.masking import SecretMasker


class LineKind(StrEnum):
    """What a log line is: a phase header, a command about to run, its output, or a message."""

    PHASE = "phase"
    COMMAND = "command"
    OUTPUT = "output"
    MESSAGE = "message"


@dataclass(frozen=True)
class LogLine:
    """One line of a run, already masked."""

    time: datetime
    phase: str
    kind: LineKind
    text: str

    def formatted(self) -> str:
        """The line as written to the log file: ISO-8601 UTC time, phase, text."""
        stamp = self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"{stamp} [{self.phase}] {self.text}"


OutputSink = Callable[[LogLine], None]


class BuildLog:
    """Writes masked lines to the log file and the sink; splits streamed output into lines."""

    def __init__(self, path: Path, masker: SecretMasker, sink: OutputSink | None) -> None:
        self.path = path
        self._masker = masker
        self._sink = sink
        self._partial = ""
        self._file: TextIO | None = None
        self._captured: list[str] | None = None
        # A line may also come from the build proxy's thread (why a request waits) while
        # the runner writes a command's output: one whole line at a time.
        self._writing = threading.Lock()

    @property
    def masker(self) -> SecretMasker:
        return self._masker

    def start_capture(self) -> None:
        """Keep the output lines written from now on, for :meth:`captured` (RETRY-regex)."""
        self._captured = []

    def captured(self) -> str:
        """The output lines kept since :meth:`start_capture`, masked, joined by newlines."""
        return "\n".join(self._captured or [])

    def __enter__(self) -> BuildLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def line(self, phase: str, kind: LineKind, text: str) -> None:
        """Write one complete line (a header, command or message), masking secrets in it."""
        for piece in self._masker.mask(text).split("\n"):
            self._emit(phase, kind, piece)

    def output(self, phase: str, chunk: str) -> None:
        """Take a piece of a command's output; complete lines are written as they arrive."""
        self._partial += self._masker.feed(chunk)
        *complete, self._partial = self._partial.split("\n")
        for text in complete:
            self._emit(phase, LineKind.OUTPUT, text.removesuffix("\r"))

    def end_output(self, phase: str) -> None:
        """The command finished: write whatever is still held back."""
        pieces = (self._partial + self._masker.flush()).split("\n")
        self._partial = ""
        if pieces[-1] == "":
            pieces.pop()
        for text in pieces:
            self._emit(phase, LineKind.OUTPUT, text.removesuffix("\r"))

    def _emit(self, phase: str, kind: LineKind, text: str) -> None:
        with self._writing:
            entry = LogLine(datetime.now(UTC), phase, kind, text)
            if self._captured is not None and kind is LineKind.OUTPUT:
                self._captured.append(text)
            if self._file is not None:
                self._file.write(entry.formatted() + "\n")
                self._file.flush()
                changes.notify(self.path)  # its followers see the line now, not at a poll
            if self._sink is not None:
                self._sink(entry)
