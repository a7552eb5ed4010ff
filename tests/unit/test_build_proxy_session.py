"""The BuildKit session reader: HTTP/2 frames, HPACK header blocks, gRPC messages and
fsutil packets on built byte streams, and the watch of a Dockerfile's stream (what it
holds, what it judges, what it refuses rather than guesses)."""

from __future__ import annotations

import asyncio
import struct

import hpack
import pytest

from stackyard.images.dockerproxy.dockerfile import frontend_directive
from stackyard.images.dockerproxy.rules import BuildScope, Forward, Refuse
from stackyard.images.dockerproxy.server import _CheckedSession, _SessionRefused
from stackyard.images.dockerproxy.session import (
    CONTINUATION,
    DATA,
    DIFF_COPY,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MODE_DIR,
    MODE_SYMLINK,
    PACKET_DATA,
    PACKET_ERR,
    PACKET_FIN,
    PACKET_REQ,
    PACKET_STAT,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    DockerfileWatch,
    Frame,
    FrameSplitter,
    GrpcMessages,
    HeaderBlocks,
    SessionError,
    Verdict,
    dockerfile_paths,
    error_frame,
    file_sync_call,
    frame_bytes,
    grpc_message,
    packet_bytes,
    parse_packet,
    settings_table_size,
    stat_bytes,
)

STREAM = 5
FILE = 0o644  # a regular file's Go FileMode


def frames_of(data: bytes, *, preface: bool = False, step: int = 1) -> list[Frame]:
    splitter = FrameSplitter(preface=preface)
    frames: list[Frame] = []
    for at in range(0, len(data), step):
        frames += splitter.feed(data[at : at + step])
    return frames


def data_frame(*packets: bytes, stream: int = STREAM, flags: int = 0) -> Frame:
    body = b"".join(grpc_message(p) for p in packets)
    return Frame(frame_bytes(DATA, flags, stream, body), DATA, flags, stream)


def stat(path: str, mode: int = FILE, size: int = 0, linkname: str = "") -> bytes:
    return packet_bytes(PACKET_STAT, stat=stat_bytes(path, mode, size, linkname))


END_OF_STATS = bytes((0x12, 0))  # a Stat field present but empty is a stat; absent ends
NO_STAT = packet_bytes(PACKET_STAT)


def test_frames_are_split_whatever_the_chunks_and_kept_byte_for_byte() -> None:
    stream = (
        PREFACE
        + frame_bytes(SETTINGS, 0, 0, struct.pack(">HI", 1, 65536))
        + frame_bytes(DATA, END_STREAM, 3, b"x" * 300)
        + frame_bytes(PING, 0, 0, b"12345678")
    )
    for step in (1, 7, 4096):
        frames = frames_of(stream, preface=True, step=step)
        assert [f.kind for f in frames] == [-1, SETTINGS, DATA, PING]
        assert b"".join(f.raw for f in frames) == stream
        assert (frames[2].stream, frames[2].flags, frames[2].payload) == (3, END_STREAM, b"x" * 300)
    assert settings_table_size(frames[1]) == 65536
    with pytest.raises(SessionError, match="preface"):
        FrameSplitter(preface=True).feed(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20)
    with pytest.raises(SessionError, match="larger"):
        FrameSplitter().feed(b"\xff\xff\xff" + bytes(6))


def test_header_blocks_are_decoded_in_order_across_continuations_padding_and_priority() -> None:
    encoder = hpack.Encoder()
    first = encoder.encode([(":path", DIFF_COPY), ("dir-name", "dockerfile")])
    second = encoder.encode([(":path", DIFF_COPY), ("dir-name", "dockerfile")])
    assert len(second) < len(first)  # the second leans on the dynamic table
    padded = bytes((3,)) + bytes(5) + first[:4] + b"\0\0\0"
    blocks = HeaderBlocks()
    assert blocks.feed(Frame(frame_bytes(HEADERS, PADDED | PRIORITY_FLAG, 1, padded),
                             HEADERS, PADDED | PRIORITY_FLAG, 1)) is None  # fmt: skip
    done = blocks.feed(Frame(frame_bytes(CONTINUATION, END_HEADERS, 1, first[4:]),
                             CONTINUATION, END_HEADERS, 1))  # fmt: skip
    assert done == (1, {":path": DIFF_COPY, "dir-name": "dockerfile"})
    again = blocks.feed(Frame(frame_bytes(HEADERS, END_HEADERS, 3, second), HEADERS, 4, 3))
    assert again is not None
    assert again[1]["dir-name"] == "dockerfile"
    call = file_sync_call(3, again[1])
    assert call is not None
    assert (call.method, call.dir_name) == (DIFF_COPY, "dockerfile")
    # A block interrupted by another frame, or one the decoder cannot read: refused.
    blocks.feed(Frame(frame_bytes(HEADERS, 0, 7, first[:2]), HEADERS, 0, 7))
    with pytest.raises(SessionError, match="interrupted"):
        blocks.feed(Frame(frame_bytes(DATA, 0, 7, b""), DATA, 0, 7))
    endless = HeaderBlocks()
    endless.feed(Frame(frame_bytes(HEADERS, 0, 9, b""), HEADERS, 0, 9))
    piece = Frame(frame_bytes(CONTINUATION, 0, 9, bytes(65536)), CONTINUATION, 0, 9)
    for _ in range(15):
        endless.feed(piece)
    endless.feed(piece)  # 1 MiB: still allowed
    with pytest.raises(SessionError, match="header block larger"):
        endless.feed(piece)
    broken = HeaderBlocks()
    with pytest.raises(SessionError, match="cannot decode"):
        broken.feed(Frame(frame_bytes(HEADERS, END_HEADERS, 1, b"\xbf"), HEADERS, END_HEADERS, 1))
    # A push promise carries a header block too: decoded, so later ones still decode.
    promised = HeaderBlocks()
    block = b"\0\0\0\x02" + hpack.Encoder().encode([(":path", "/x")])
    pushed = promised.feed(Frame(frame_bytes(PUSH_PROMISE, END_HEADERS, 1, block),
                                 PUSH_PROMISE, END_HEADERS, 1))  # fmt: skip
    assert pushed == (1, {":path": "/x"})


def test_grpc_messages_and_packets_are_read_as_go_reads_them() -> None:
    messages = GrpcMessages()
    both = grpc_message(b"one") + grpc_message(b"")
    assert messages.feed(both[:6]) == []
    assert messages.feed(both[6:]) == [b"one", b""]
    with pytest.raises(SessionError, match="compressed"):
        GrpcMessages().feed(b"\x01\0\0\0\x01x")
    packet = parse_packet(stat("a/Dockerfile", FILE, 12))
    assert packet.kind == PACKET_STAT
    assert packet.stat is not None
    assert (packet.stat.path, packet.stat.mode, packet.stat.size) == ("a/Dockerfile", FILE, 12)
    assert parse_packet(NO_STAT).stat is None
    assert parse_packet(END_OF_STATS).stat is not None
    data = parse_packet(packet_bytes(PACKET_DATA, ident=300, data=b"FROM x"))
    assert (data.kind, data.ident, data.data) == (PACKET_DATA, 300, b"FROM x")
    # A repeated Stat merges (Go's decoder); an unknown field is skipped; a group refused.
    again = bytes((0x10, 0xFF, 0x03, 0x40, 0x00))  # mode 0o777, and field 8 (devmajor)
    merged = parse_packet(
        packet_bytes(PACKET_STAT, stat=stat_bytes("Dockerfile", FILE)) + bytes((0x12, 5)) + again
    )
    assert merged.stat is not None
    assert (merged.stat.path, merged.stat.mode) == ("Dockerfile", 0o777)
    assert parse_packet(bytes((0x28, 1)) + packet_bytes(PACKET_FIN)).kind == PACKET_FIN
    with pytest.raises(SessionError, match="wire type 3"):
        parse_packet(bytes((0x2B,)))
    with pytest.raises(SessionError, match="cut short"):
        parse_packet(bytes((0x22, 9, 1)))


def test_a_dockerfile_is_held_from_its_first_data_until_its_end_is_judged() -> None:
    watch = DockerfileWatch(STREAM, "Dockerfile")
    stats = data_frame(stat("Dockerfile", FILE, 10), stat(".dockerignore"), NO_STAT)
    assert watch.feed(stats) == Verdict()  # the list of files goes on
    first = watch.feed(data_frame(packet_bytes(PACKET_DATA, data=b"FROM ")))
    assert first.hold
    assert not first.judge
    assert not first.problem
    ignore = watch.feed(data_frame(packet_bytes(PACKET_DATA, ident=1, data=b"*.log")))
    assert ignore.hold
    assert not ignore.judge
    last = watch.feed(data_frame(packet_bytes(PACKET_DATA, data=b"busybox"),
                                 packet_bytes(PACKET_DATA)))  # fmt: skip
    assert last.judge == [("Dockerfile", b"FROM busybox")]
    assert not watch.holding
    assert not watch.feed(data_frame(packet_bytes(PACKET_FIN))).problem
    after = watch.feed(data_frame(packet_bytes(PACKET_DATA, data=b"FROM victim")))
    assert "after" in after.problem


def test_a_message_cut_across_frames_is_held_too() -> None:
    watch = DockerfileWatch(STREAM, "sub/Dockerfile.web")
    watch.feed(data_frame(stat("sub", MODE_DIR), stat("sub/Dockerfile.web", FILE), NO_STAT))
    body = grpc_message(packet_bytes(PACKET_DATA, ident=1, data=b"FROM x\n"))
    body += grpc_message(packet_bytes(PACKET_DATA, ident=1))
    verdicts = [
        watch.feed(Frame(frame_bytes(DATA, 0, STREAM, body[at : at + 4]), DATA, 0, STREAM))
        for at in range(0, len(body), 4)
    ]
    assert [v.judge for v in verdicts if v.judge] == [[("sub/Dockerfile.web", b"FROM x\n")]]


@pytest.mark.parametrize(
    ("frames", "words"),
    [
        ([stat("Dockerfile", MODE_SYMLINK, linkname="other")], "is a link"),
        ([stat("Dockerfile", FILE, linkname="other")], "is a link"),  # a hard link
        ([stat("d", MODE_SYMLINK, linkname="e")], "through the link d"),
        ([packet_bytes(PACKET_DATA, ident=0, data=b"FROM victim")], "before its stat"),
        ([stat("Dockerfile"), NO_STAT, stat("x")], "after the list"),
        ([stat("Dockerfile"), NO_STAT, packet_bytes(PACKET_FIN)], "did not read Dockerfile"),
        ([packet_bytes(PACKET_REQ)], "packet of type 1"),
        ([stat("Dockerfile"), NO_STAT,
          packet_bytes(PACKET_DATA, data=b"x" * (4 * 1024 * 1024 + 1))], "larger than 4 MiB"),
    ],
)  # fmt: skip
def test_what_the_proxy_cannot_read_as_the_engine_would_is_refused(
    frames: list[bytes], words: str
) -> None:
    filename = "d/Dockerfile" if "through the link" in words else "Dockerfile"
    watch = DockerfileWatch(STREAM, filename)
    problems = [watch.feed(data_frame(packet)).problem for packet in frames]
    assert words in problems[-1], problems


def test_frames_the_dockerfile_s_stream_should_not_carry_are_refused() -> None:
    watch = DockerfileWatch(STREAM, "Dockerfile")
    assert "type 6" in watch.feed(Frame(frame_bytes(PING, 0, STREAM, bytes(8)), PING, 0,
                                        STREAM)).problem  # fmt: skip
    watch = DockerfileWatch(STREAM, "Dockerfile")
    watch.feed(data_frame(stat("Dockerfile"), NO_STAT, packet_bytes(PACKET_DATA, data=b"F")))
    trailers = Frame(frame_bytes(HEADERS, END_HEADERS, STREAM, b""), HEADERS, END_HEADERS, STREAM)
    assert "ended before" in watch.feed(trailers).problem
    cut = DockerfileWatch(STREAM, "Dockerfile")
    cut.feed(data_frame(stat("Dockerfile"), NO_STAT))
    ended = cut.feed(data_frame(packet_bytes(PACKET_DATA, data=b"F"), flags=END_STREAM))
    assert "ended before" in ended.problem
    with pytest.raises(SessionError, match="compressed"):
        cut.feed(Frame(frame_bytes(DATA, 0, STREAM, b"\x01\0\0\0\0"), DATA, 0, STREAM))


def test_both_names_the_frontend_may_read_are_judged() -> None:
    assert dockerfile_paths("") == ("Dockerfile", "dockerfile")
    assert dockerfile_paths("./a/../b/Dockerfile") == ("b/Dockerfile", "b/dockerfile")
    assert dockerfile_paths("web.Dockerfile") == ("web.Dockerfile",)
    watch = DockerfileWatch(STREAM, "Dockerfile")
    watch.feed(data_frame(stat("Dockerfile", MODE_DIR), stat("dockerfile"), NO_STAT))
    done = watch.feed(data_frame(packet_bytes(PACKET_DATA, ident=1, data=b"FROM v"),
                                 packet_bytes(PACKET_DATA, ident=1)))  # fmt: skip
    assert done.judge == [("dockerfile", b"FROM v")]


def test_a_refusal_reaches_the_engine_as_the_sender_s_error() -> None:
    frame = frames_of(error_frame(STREAM, "refused: line 1"), step=4096)[0]
    assert (frame.kind, frame.stream) == (DATA, STREAM)
    (message,) = GrpcMessages().feed(frame.payload)
    packet = parse_packet(message)
    assert (packet.kind, packet.data) == (PACKET_ERR, b"refused: line 1")


def test_a_custom_frontend_directive_is_found_as_buildkit_finds_it() -> None:
    assert frontend_directive(b"# syntax=docker/dockerfile:1\nFROM x\n") == (
        1, "# syntax=docker/dockerfile:1",
    )  # fmt: skip
    assert frontend_directive(b"#escape=`\r\n#  SYNTAX = v\t\r\nFROM x\n") == (2, "#  SYNTAX = v")
    assert frontend_directive(b"\xef\xbb\xbf# syntax=v\n") == (1, "# syntax=v")
    assert frontend_directive(b"FROM x\n# syntax=v\n") is None
    assert frontend_directive(b"# a comment\n# syntax=v\n") is None
    assert frontend_directive(b"\n# syntax=v\n") is None


class _Socket:
    def __init__(self) -> None:
        self.session_builds = {"s1": Forward({"dockerfile": ["Dockerfile"]}, buildkit=True)}
        self.refusals: list[str] = []
        self.scope = BuildScope("shop", "127.0.0.1:5000")


class _Connection:
    """The session's judge: refuses a Dockerfile naming ``victim``."""

    def __init__(self) -> None:
        self.socket = _Socket()
        self.judged: list[bytes] = []

    async def _session_dockerfile_refusal(
        self, build: Forward, path: str, content: bytes
    ) -> Refuse | None:
        self.judged.append(content)
        return Refuse(403, f"refused {path}") if b"victim" in content else None


def _session(dockerfile: bytes) -> tuple[_Connection, bytes, list[bytes]]:
    """Relay one session: the engine asks for the Dockerfile; the CLI sends it. What
    reached the engine from the CLI, cut where each of its reads ended."""
    connection = _Connection()
    checked = _CheckedSession(connection, "s1")  # type: ignore[arg-type]
    ask = hpack.Encoder().encode([(":path", DIFF_COPY), ("dir-name", "dockerfile")])
    engine = PREFACE + frame_bytes(HEADERS, END_HEADERS, STREAM, ask)
    context = frame_bytes(DATA, 0, 7, b"context bytes")
    reads = [
        frame_bytes(SETTINGS, 0, 0, b"") + data_frame(stat("Dockerfile"), NO_STAT).raw,
        data_frame(packet_bytes(PACKET_DATA, data=dockerfile[:4])).raw + context,
        data_frame(packet_bytes(PACKET_DATA, data=dockerfile[4:]), packet_bytes(PACKET_DATA)).raw,
        data_frame(packet_bytes(PACKET_FIN)).raw,
    ]

    async def relay() -> list[bytes]:
        assert await checked.from_engine(engine) == engine
        out = []
        for read in reads:
            try:
                out.append(await checked.from_client(read))
            except _SessionRefused as refused:
                out.append(refused.last)
                break
        return out

    return connection, context, asyncio.run(relay())


def test_the_session_holds_the_dockerfile_until_it_passed_and_relays_the_rest() -> None:
    connection, context, out = _session(b"FROM busybox\n")
    assert connection.judged == [b"FROM busybox\n"]
    assert [frame.kind for frame in frames_of(out[0], step=4096)] == [SETTINGS, DATA]
    assert out[1] == b""  # the Dockerfile's first piece and what followed it: held
    end = data_frame(packet_bytes(PACKET_DATA, data=b" busybox\n"), packet_bytes(PACKET_DATA))
    first = data_frame(packet_bytes(PACKET_DATA, data=b"FROM")).raw
    assert out[2] == first + context + end.raw  # released, in order, once judged
    assert out[3] == data_frame(packet_bytes(PACKET_FIN)).raw


def test_a_refused_dockerfile_never_reaches_the_engine_its_error_does() -> None:
    connection, context, out = _session(b"FROM victim\n")
    assert len(out) == 3
    assert connection.socket.refusals == ["refused Dockerfile"]
    sent = b"".join(out)
    assert b"victim" not in sent
    assert context not in sent  # held behind it, dropped with it
    assert out[2] == error_frame(STREAM, "refused Dockerfile")


CANCEL = struct.pack(">I", 8)  # RST_STREAM's CANCEL
GOING = struct.pack(">II", STREAM, 0)  # GOAWAY: last stream, NO_ERROR
ENDINGS = pytest.mark.parametrize(
    "ending",
    [frame_bytes(RST_STREAM, 0, STREAM, CANCEL), frame_bytes(GOAWAY, 0, 0, GOING)],
    ids=["reset", "goaway"],
)


def _holding_session() -> tuple[_Connection, _CheckedSession, bytes]:
    """A session whose Dockerfile's first piece is held: what reached the engine so far."""
    connection = _Connection()
    checked = _CheckedSession(connection, "s1")  # type: ignore[arg-type]
    ask = hpack.Encoder().encode([(":path", DIFF_COPY), ("dir-name", "dockerfile")])
    engine = PREFACE + frame_bytes(HEADERS, END_HEADERS, STREAM, ask)
    stats = data_frame(stat("Dockerfile"), NO_STAT).raw
    first = data_frame(packet_bytes(PACKET_DATA, data=b"FROM victim")).raw
    context = frame_bytes(DATA, 0, 7, b"context bytes")

    async def start() -> bytes:
        assert await checked.from_engine(engine) == engine
        assert await checked.from_client(stats) == stats
        assert await checked.from_client(first + context) == b""  # held
        return stats

    return connection, checked, asyncio.run(start())


@ENDINGS
def test_the_cli_ending_a_held_dockerfile_ends_the_session_without_its_bytes(
    ending: bytes,
) -> None:
    connection, checked, _ = _holding_session()
    with pytest.raises(_SessionRefused) as refused:
        asyncio.run(checked.from_client(ending))
    last = refused.value.last
    assert b"victim" not in last
    assert b"context bytes" not in last
    assert ending not in last
    (message,) = connection.socket.refusals
    assert last == error_frame(STREAM, message)  # the engine learns why, then it ends
    assert not checked.held
    assert connection.judged == []


@ENDINGS
def test_the_engine_ending_a_held_dockerfile_ends_the_session_without_its_bytes(
    ending: bytes,
) -> None:
    connection, checked, _ = _holding_session()
    with pytest.raises(_SessionRefused) as refused:
        asyncio.run(checked.from_engine(ending))
    assert refused.value.last == b""  # nothing more to the CLI; the held bytes are dropped
    (message,) = connection.socket.refusals
    assert "while the proxy checked" in message
    assert connection.judged == []


def test_the_engine_resetting_another_stream_while_one_is_held_is_relayed() -> None:
    connection, checked, _ = _holding_session()
    other = frame_bytes(RST_STREAM, 0, 7, CANCEL)
    assert asyncio.run(checked.from_engine(other)) == other
    assert connection.socket.refusals == []
    rest = data_frame(packet_bytes(PACKET_DATA, data=b" x"), packet_bytes(PACKET_DATA)).raw
    with pytest.raises(_SessionRefused):  # the hold still ends only when judged
        asyncio.run(checked.from_client(rest))
    assert connection.judged == [b"FROM victim x"]
