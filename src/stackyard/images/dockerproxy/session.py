"""A BuildKit session read as it is relayed, for the Dockerfile the build's CLI sends.

POST /session switches to h2c: the engine is the HTTP/2 client (it calls gRPC methods), the
build's docker CLI the server. The Dockerfile frontend reads the Dockerfile through the
FileSync method ``DiffCopy`` with the gRPC metadata ``dir-name: dockerfile``; the CLI answers
with fsutil packets (``Packet``: a STAT per file, an empty STAT when the list ends, DATA
chunks of each file the engine asked for, an empty DATA at a file's end, FIN; field numbers
as in tonistiigi/fsutil's types/wire.proto and stat.proto, the version Docker 20.10 vendors).

Every frame of both directions is split here (9-byte headers), every header block decoded
in order with ``hpack`` (its state must follow each side's), the gRPC messages of that one
stream taken from its DATA frames (5-byte prefix) and their packets decoded. The rest of
the session (the context's bytes) is relayed frame by frame as it is. :class:`DockerfileWatch`
says which frames to hold: from the first DATA packet of the Dockerfile until its end has
been judged; what it cannot read as the engine would (a compressed message, a packet out of
order, a link) is refused rather than guessed.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DIFF_COPY = "/moby.filesync.v1.FileSync/DiffCopy"
FILE_SYNC = "/moby.filesync.v1.FileSync/"
DOCKERFILE_DIR = "dockerfile"  # the Dockerfile frontend's local name for the Dockerfile
MAX_DOCKERFILE = 4 * 1024 * 1024
MAX_MESSAGE = MAX_DOCKERFILE + 64 * 1024
MAX_FRAME = 1024 * 1024  # far above the 16 KiB frames both gRPC sides accept

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE = 1

PACKET_STAT, PACKET_REQ, PACKET_DATA, PACKET_FIN, PACKET_ERR = 0, 1, 2, 3, 4
MODE_DIR = 1 << 31  # Go's os.FileMode bits, as fsutil sends them
MODE_SYMLINK = 1 << 27
MODE_TYPE = 0x8F280000  # dir, symlink, named pipe, socket, device, char device, irregular


class SessionError(ValueError):
    """Bytes on the session the proxy cannot read as the engine would."""


@dataclass(frozen=True)
class Frame:
    """One HTTP/2 frame: its bytes as they came (``raw``) and its parts."""

    raw: bytes
    kind: int
    flags: int
    stream: int

    @property
    def payload(self) -> bytes:
        return self.raw[9:]


def frame_bytes(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """A frame's bytes: 24-bit length, type, flags, 31-bit stream id, payload."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream & 0x7FFFFFFF)
        + payload
    )


class FrameSplitter:
    """Cuts one direction's byte stream into whole frames (after the client's preface,
    when ``preface``)."""

    def __init__(self, *, preface: bool = False) -> None:
        self._buffer = bytearray()
        self._preface = preface

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        buffer, frames, start = self._buffer, [], 0
        if self._preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    raise SessionError("the session does not start with HTTP/2's preface")
                return []
            if not buffer.startswith(PREFACE):
                raise SessionError("the session does not start with HTTP/2's preface")
            self._preface = False
            frames.append(Frame(PREFACE, -1, 0, 0))
            start = len(PREFACE)
        while len(buffer) - start >= 9:
            length = int.from_bytes(buffer[start : start + 3], "big")
            if length > MAX_FRAME:
                raise SessionError(f"a frame of {length} bytes is larger than the session allows")
            end = start + 9 + length
            if len(buffer) < end:
                break
            raw = bytes(buffer[start:end])
            stream = int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF
            frames.append(Frame(raw, raw[3], raw[4], stream))
            start = end
        del buffer[:start]
        return frames


def _unpadded(frame: Frame) -> bytes:
    payload = frame.payload
    if frame.flags & PADDED and frame.kind in (DATA, HEADERS, PUSH_PROMISE):
        if not payload:
            raise SessionError("a padded frame without its pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise SessionError("a frame's padding is longer than the frame")
        payload = payload[1 : len(payload) - pad]
    return payload


def data_of(frame: Frame) -> bytes:
    """A DATA frame's data, padding removed."""
    return _unpadded(frame)


class HeaderBlocks:
    """One direction's header blocks (HEADERS or PUSH_PROMISE, then CONTINUATION frames),
    each decoded in order with that direction's HPACK state."""

    def __init__(self) -> None:
        self.decoder = hpack.Decoder()
        self._open: tuple[int, bytearray] | None = None  # stream, fragments so far

    def limit(self, table_size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: the largest table this side may use."""
        self.decoder.max_allowed_table_size = max(table_size, 4096)

    def feed(self, frame: Frame) -> tuple[int, dict[str, str]] | None:
        """The stream and headers of a block that ``frame`` ends; None otherwise. A frame
        in the middle of another's block is a protocol error."""
        if self._open is not None and frame.kind != CONTINUATION:
            raise SessionError("a header block was interrupted by another frame")
        if frame.kind == CONTINUATION:
            if self._open is None or self._open[0] != frame.stream:
                raise SessionError("a CONTINUATION frame outside a header block")
            self._open[1].extend(frame.payload)
            if len(self._open[1]) > MAX_FRAME:
                raise SessionError("a header block larger than the session allows")
        elif frame.kind == HEADERS:
            fragment = _unpadded(frame)
            if frame.flags & PRIORITY_FLAG:
                fragment = fragment[5:]
            self._open = (frame.stream, bytearray(fragment))
        elif frame.kind == PUSH_PROMISE:
            self._open = (frame.stream, bytearray(_unpadded(frame)[4:]))
        else:
            return None
        if not frame.flags & END_HEADERS:
            return None
        stream, block = self._open
        self._open = None
        try:
            decoded = self.decoder.decode(bytes(block), raw=True)
        except hpack.HPACKError as exc:
            raise SessionError(f"a header block the proxy cannot decode: {exc}") from exc
        headers: dict[str, str] = {}
        for name, value in decoded:
            key = bytes(name).decode("latin-1")
            headers[key] = bytes(value).decode("latin-1")
        return stream, headers


def settings_table_size(frame: Frame) -> int | None:
    """SETTINGS_HEADER_TABLE_SIZE in a (non-ACK) SETTINGS frame, if it sets it."""
    if frame.kind != SETTINGS or frame.flags & 0x1:
        return None
    payload, found = frame.payload, None
    if len(payload) % 6:
        raise SessionError("a SETTINGS frame of a size HTTP/2 does not allow")
    for at in range(0, len(payload), 6):
        key, value = struct.unpack(">HI", payload[at : at + 6])
        if key == SETTINGS_HEADER_TABLE_SIZE:
            found = value
    return found


class GrpcMessages:
    """gRPC messages from one stream's DATA: a flag byte (0: not compressed), a 32-bit
    length, the message."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= 5:
            compressed, length = self._buffer[0], int.from_bytes(self._buffer[1:5], "big")
            if compressed:
                raise SessionError("a compressed gRPC message, which the proxy does not read")
            if length > MAX_MESSAGE:
                raise SessionError(f"a gRPC message of {length} bytes")
            if len(self._buffer) < 5 + length:
                break
            messages.append(bytes(self._buffer[5 : 5 + length]))
            del self._buffer[: 5 + length]
        return messages

    @property
    def pending(self) -> bool:
        return bool(self._buffer)


def grpc_message(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


@dataclass
class Stat:
    path: str = ""
    mode: int = 0
    size: int = 0
    linkname: str = ""


@dataclass
class Packet:
    """fsutil's Packet: type (1), stat (2, None when absent), ID (3), data (4)."""

    kind: int = PACKET_STAT
    stat: Stat | None = None
    ident: int = 0
    data: bytes = b""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise SessionError("a protobuf varint is cut short")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, at
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; unknown fields are skipped
    by the reader as Go's are, groups refused."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, wire, value
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise SessionError("a protobuf field is cut short")
            yield number, wire, data[at : at + length]
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
            if at > len(data):
                raise SessionError("a protobuf field is cut short")
        else:
            raise SessionError(f"a protobuf field of wire type {wire}")


def _merge_stat(stat: Stat, data: bytes) -> None:
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2 and isinstance(value, bytes):
            stat.path = value.decode("utf-8", "replace")
        elif number == 2 and wire == 0 and isinstance(value, int):
            stat.mode = value & 0xFFFFFFFF
        elif number == 5 and wire == 0 and isinstance(value, int):
            stat.size = value
        elif number == 7 and wire == 2 and isinstance(value, bytes):
            stat.linkname = value.decode("utf-8", "replace")
        elif number in (1, 2, 5, 7):
            raise SessionError(f"a Stat field {number} of the wrong wire type")


def parse_packet(message: bytes) -> Packet:
    """An fsutil Packet (a repeated embedded Stat merges, as Go's decoder does)."""
    packet = Packet()
    for number, wire, value in _fields(message):
        if number == 1 and wire == 0 and isinstance(value, int):
            packet.kind = value
        elif number == 2 and wire == 2 and isinstance(value, bytes):
            packet.stat = packet.stat or Stat()
            _merge_stat(packet.stat, value)
        elif number == 3 and wire == 0 and isinstance(value, int):
            packet.ident = value & 0xFFFFFFFF
        elif number == 4 and wire == 2 and isinstance(value, bytes):
            packet.data = value
        elif number in (1, 2, 3, 4):
            raise SessionError(f"a Packet field {number} of the wrong wire type")
    return packet


def packet_bytes(kind: int, *, ident: int = 0, data: bytes = b"", stat: bytes = b"") -> bytes:
    """A Packet's protobuf bytes (what tests and a refusal send)."""
    out = bytearray()
    if kind:
        out += bytes((0x08,)) + _encode_varint(kind)
    if stat:
        out += bytes((0x12,)) + _encode_varint(len(stat)) + stat
    if ident:
        out += bytes((0x18,)) + _encode_varint(ident)
    if data:
        out += bytes((0x22,)) + _encode_varint(len(data)) + data
    return bytes(out)


def stat_bytes(path: str, mode: int, size: int = 0, linkname: str = "") -> bytes:
    raw = path.encode()
    out = bytearray(bytes((0x0A,)) + _encode_varint(len(raw)) + raw)
    out += bytes((0x10,)) + _encode_varint(mode)
    if size:
        out += bytes((0x28,)) + _encode_varint(size)
    if linkname:
        link = linkname.encode()
        out += bytes((0x3A,)) + _encode_varint(len(link)) + link
    return bytes(out)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def error_frame(stream: int, message: str) -> bytes:
    """A DATA frame carrying fsutil's PACKET_ERR: the engine fails the transfer with
    "error from sender: MESSAGE"."""
    body = grpc_message(packet_bytes(PACKET_ERR, data=message.encode()))
    return frame_bytes(DATA, 0, stream, body)


def _normal(path: str) -> str:
    return posixpath.normpath("/" + path).lstrip("/")


def dockerfile_paths(filename: str) -> tuple[str, ...]:
    """The paths the frontend may read the Dockerfile from: the build's ``dockerfile``
    and, for a file named Dockerfile, the lower-case name it falls back to."""
    wanted = _normal(filename or "Dockerfile")
    if posixpath.basename(wanted) == "Dockerfile":
        return (wanted, posixpath.join(posixpath.dirname(wanted), "dockerfile"))
    return (wanted,)


@dataclass
class _File:
    path: str
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False


@dataclass
class Verdict:
    """What a frame from the CLI means: ``judge`` holds a Dockerfile's bytes to judge now
    (the frame and those held before it go on only if it passes); ``hold``: the frame
    waits for that; ``problem``: the session is refused."""

    hold: bool = False
    judge: list[tuple[str, bytes]] = field(default_factory=list)
    problem: str = ""


class DockerfileWatch:
    """The CLI's side of one ``dockerfile`` DiffCopy stream, frame by frame."""

    def __init__(self, stream: int, filename: str) -> None:
        self.stream = stream
        self.paths = dockerfile_paths(filename)
        self._messages = GrpcMessages()
        self._stats: dict[int, str] = {}  # file id -> path, for the Dockerfile's candidates
        self._count = 0
        self._stats_ended = False
        self._files: dict[int, _File] = {}
        self.holding = False
        self.finished = False

    def feed(self, frame: Frame) -> Verdict:
        if self.finished:
            if frame.kind == DATA and data_of(frame):
                return Verdict(problem="data after the Dockerfile's transfer ended")
            return Verdict()
        if frame.kind not in (DATA, HEADERS, CONTINUATION, RST_STREAM, WINDOW_UPDATE):
            return Verdict(problem=f"a frame of type {frame.kind} on the Dockerfile's stream")
        if frame.kind != DATA:
            if self.holding and frame.kind != WINDOW_UPDATE:
                return Verdict(problem="the Dockerfile's stream ended before its data did")
            return Verdict(hold=self.holding)
        verdict = Verdict()
        for message in self._messages.feed(data_of(frame)):
            self._packet(parse_packet(message), verdict)
            if verdict.problem:
                return verdict
        if frame.flags & END_STREAM and (self._messages.pending or self.holding):
            return Verdict(problem="the Dockerfile's stream ended before its data did")
        verdict.hold = self.holding or bool(verdict.judge)
        if verdict.judge and not any(not f.ended for f in self._files.values()):
            self.holding = False
        return verdict

    def _packet(self, packet: Packet, verdict: Verdict) -> None:
        if packet.kind == PACKET_STAT:
            if self._stats_ended:
                verdict.problem = "a file's stat after the list of files ended"
            elif packet.stat is None:
                self._stats_ended = True
            else:
                self._stat(packet.stat, verdict)
        elif packet.kind == PACKET_DATA:
            self._data(packet, verdict)
        elif packet.kind == PACKET_FIN:
            unread = [
                f"{path}" for ident, path in self._stats.items()
                if ident not in self._files or not self._files[ident].ended
            ]  # fmt: skip
            if unread:
                verdict.problem = f"the engine did not read {unread[0]} through the proxy"
            self.finished = True
        elif packet.kind != PACKET_ERR:
            verdict.problem = f"an fsutil packet of type {packet.kind}"

    def _stat(self, stat: Stat, verdict: Verdict) -> None:
        ident = self._count
        self._count += 1
        path = _normal(stat.path)
        if stat.mode & MODE_SYMLINK and any(w.startswith(path + "/") for w in self.paths):
            verdict.problem = (
                f"the Dockerfile is reached through the link {path}: name the file itself"
            )
            return
        if path not in self.paths:
            return
        kind = stat.mode & MODE_TYPE
        if kind & MODE_SYMLINK or (kind == 0 and stat.linkname):
            verdict.problem = f"the Dockerfile {path} is a link: name the file itself (-f)"
        elif kind == 0:
            self._stats[ident] = path

    def _data(self, packet: Packet, verdict: Verdict) -> None:
        if packet.ident >= self._count:
            verdict.problem = f"data for file {packet.ident} before its stat"
            return
        path = self._stats.get(packet.ident)
        if path is None:
            return  # another file (the .dockerignore): not the Dockerfile
        file = self._files.setdefault(packet.ident, _File(path))
        if file.ended:
            verdict.problem = f"data for {path} after its end"
            return
        self.holding = True
        if packet.data:
            file.data += packet.data
            if len(file.data) > MAX_DOCKERFILE:
                verdict.problem = f"the Dockerfile {path} is larger than 4 MiB"
            return
        file.ended = True
        verdict.judge.append((path, bytes(file.data)))


@dataclass
class StreamOpen:
    """A FileSync call the engine opened: its stream, method and local name."""

    stream: int
    method: str
    dir_name: str


def file_sync_call(stream: int, headers: dict[str, str]) -> StreamOpen | None:
    path = headers.get(":path", "")
    if not path.startswith(FILE_SYNC):
        return None
    return StreamOpen(stream, path, headers.get("dir-name", ""))
