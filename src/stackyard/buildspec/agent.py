"""The shell agent of a build container, and the protocol the runner speaks with it.

A build container runs one small POSIX ``sh`` loop (:data:`AGENT_SCRIPT`) per Linux user;
the container shell (container.py) writes one request at a time to its stdin and reads its
answers from the attached stream. Each command still runs as its own ``sh -c`` in a new
session, exactly as on the host, so the runner's semantics do not change. Everything here
is plain data and pure parsing; container.py does the I/O.

The protocol, on the agent's stdin (after a first line ``hello``, which the agent answers
with ``ready HOME``):

- ``run TOKEN SHELL``, then the script's lines, then a line ``TOKEN``: run the script with
  ``SHELL -c`` in a new session with an empty environment (the script exports its own);
- ``stop G1 G2 ...``: SIGTERM those process groups (background processes left at the end).

On the agent's stderr (its own channel: commands never hold it), one message a line:
``ready``, ``pid P``, ``state`` followed by the state dump and the ``export -p``
listing, each ended by :data:`END` (the dump is ``none`` when the command left none),
``exit S``, ``stopped G`` and ``stopped-all``. On its stdout, the
command's merged output, then a fence ``\\nTOKEN\\n`` once the command has exited; the
fence keeps the output in order, which the two streams do not guarantee between them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

# $1: the agent's own directory (state files). Builtins only in the loop but for setsid,
# env and cat, which every Debian, Ubuntu and Alpine image has: two process starts a
# command besides its own shell.
AGENT_SCRIPT = r"""
d=$1
mkdir -p "$d" && chmod 700 "$d" || { printf 'fatal cannot create %s\n' "$d" >&2; exit 97; }
cd / || exit 97
IFS= read -r r || exit 0
printf 'ready %s\n' "$HOME" >&2
while IFS= read -r r; do
  case $r in
  run\ *)
    set -- $r
    t=$2; x=$3; s=
    while IFS= read -r l; do
      [ "$l" = "$t" ] && break
      s="$s$l
"
    done
    printf none > "$d/state"; : > "$d/state.x"
    setsid env -i "$x" -c "$s" </dev/null 2>&1 &
    p=$!
    printf 'pid %s\n' "$p" >&2
    wait "$p"; c=$?
    printf '\n%s\n' "$t"
    printf 'state\n' >&2
    { printf '\000\000\000END\n' > "$d/end"; } 2>/dev/null
    if [ -s "$d/end" ]; then
      cat "$d/state" "$d/end" "$d/state.x" "$d/end" 3>&2 2>/dev/null >&3
    else
      printf '\000\000\000END\n\000\000\000END\n' >&2
    fi
    printf 'exit %s\n' "$c" >&2 ;;
  stop\ *)
    for g in ${r#stop }; do
      kill -TERM "-$g" 2>/dev/null && printf 'stopped %s\n' "$g" >&2
    done
    printf 'stopped-all\n' >&2 ;;
  esac
done
"""
# The state dump and the ``export -p`` listing go out with one ``cat`` (each exec costs
# about a millisecond here, on every command), the end marker read from a file the agent
# writes first; where that file cannot be written (its tmpfs full), printf says both ends.
# Ends the state dump and the ``export -p`` listing on the agent's channel: neither holds
# three NULs in a row (the dump ends each non-empty name, and each value, with one NUL).
END = b"\0\0\0END\n"

STDOUT, STDERR = 1, 2
_CANNOT_FORK = re.compile(rb"(?i)\bcan(?:not|'t) fork\b")
_HEADER = 8


def new_token() -> str:
    """A line no script contains: it ends a request's script and fences its output."""
    return f"__sy_end_{secrets.token_hex(16)}"


def run_request(token: str, shell: str, script: str) -> bytes:
    """The bytes that ask the agent to run ``script`` with ``shell -c``."""
    if "\0" in script:
        raise ValueError("a command cannot contain a NUL character")
    body = script if script.endswith("\n") else script + "\n"
    return f"run {token} {shell}\n{body}{token}\n".encode()


def stop_request(groups: list[int]) -> bytes:
    return ("stop " + " ".join(str(g) for g in groups) + "\n").encode()


class Frames:
    """Docker's multiplexed attach stream: 8-byte headers (stream, size), then the payload."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= _HEADER:
            stream = self._buffer[0]
            size = int.from_bytes(self._buffer[4:_HEADER], "big")
            if len(self._buffer) < _HEADER + size:
                return
            payload = self._buffer[_HEADER : _HEADER + size]
            self._buffer = self._buffer[_HEADER + size :]
            yield stream, payload


class Fence:
    """Splits a command's output from the fence that follows it; what comes after the fence
    (late output of background processes) is kept for the next command."""

    def __init__(self, token: str, carried: bytes = b"") -> None:
        self._fence = f"\n{token}\n".encode()
        self._held = carried
        self.reached = False
        self.after = b""

    def feed(self, data: bytes) -> bytes:
        """Output that is certainly the command's; a possible start of the fence is held."""
        if self.reached:
            self.after += data
            return b""
        self._held += data
        at = self._held.find(self._fence)
        if at >= 0:
            out, self.after = self._held[:at], self._held[at + len(self._fence) :]
            self._held, self.reached = b"", True
            return out
        keep = _partial_suffix(self._held, self._fence)
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return out


def _partial_suffix(data: bytes, fence: bytes) -> int:
    """Length of the longest end of ``data`` that is a start of ``fence``."""
    for size in range(min(len(data), len(fence) - 1), 0, -1):
        if fence.startswith(data[-size:]):
            return size
    return 0


@dataclass
class Reply:
    """What the agent said about one request, as far as it has said it."""

    pid: int | None = None
    state: bytes | None = None
    exports: bytes | None = None
    status: int | None = None
    stopped: list[int] = field(default_factory=list)
    stopped_all: bool = False
    ready: bool = False
    home: str = ""  # the agent's HOME (the engine sets it from the image's /etc/passwd)
    fatal: str | None = None


class Messages:
    """Parses the agent's stderr channel into :class:`Reply` fields as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = b""
        self._blobs: list[bytes] | None = None  # after "state": the dump, then the listing
        self.reply = Reply()
        # Lines on the channel that are no message: the agent's shell's own errors (its
        # "Cannot fork" when the build's process limit starves it). The last few.
        self.errors: list[str] = []

    def could_not_fork(self) -> bool:
        """Whether the agent's shell said it cannot start a process (dash's "Cannot fork",
        busybox's "can't fork"): among its errors, or in what it wrote before it ended
        in the middle of a state dump (the dump's ``cat`` is what could not start)."""
        said = [line.encode() for line in self.errors] + [self._buffer]
        return any(_CANNOT_FORK.search(text) for text in said)

    def next_reply(self) -> Reply:
        """Start a new reply (the previous request is answered); keep unread bytes."""
        self.reply = Reply(ready=self.reply.ready, home=self.reply.home)
        return self.reply

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        if self._blobs is not None:
            blob, end, rest = self._buffer.partition(END)
            if not end:
                return False
            self._buffer = rest
            self._blobs.append(blob)
            if len(self._blobs) == 2:
                state, exports = self._blobs
                self._blobs = None
                if state != b"none":
                    self.reply.state, self.reply.exports = state, exports
            return True
        line, newline, rest = self._buffer.partition(b"\n")
        if not newline:
            return False
        self._buffer = rest
        self._message(line.decode("utf-8", "replace"))
        return True

    def _message(self, line: str) -> None:
        word, _, value = line.partition(" ")
        reply = self.reply
        if word == "ready":
            reply.ready = True
            reply.home = value
        elif word == "fatal":
            reply.fatal = value
        elif word == "pid" and value.isdigit():
            reply.pid = int(value)
        elif word == "state":
            self._blobs = []
        elif word == "exit" and value.isdigit():
            reply.status = int(value)
        elif word == "stopped" and value.isdigit():
            reply.stopped.append(int(value))
        elif word == "stopped-all":
            reply.stopped_all = True
        elif line:
            self.errors = [*self.errors[-4:], line[:200]]
