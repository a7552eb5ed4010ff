"""DockerBuilder against the real engine when a connection closes without an answer.

The Docker SDK reuses kept-alive connections; one the far end closed just as it was
reused fails with "Remote end closed connection without response". A relay in front of
the engine's socket drops the first ``POST /build`` that way: the build must go through
on a fresh connection, and the same fault twice must be a clear Stackyard error.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from stackyard.errors import ComponentError
from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.dockerproxy.server import engine_socket_path
from tests.integration.accepting import stop_accepting

pytestmark = pytest.mark.integration


class DroppingRelay:
    """Relays a unix socket to the engine's, closing the connection (both ends, no answer)
    on the first ``drops`` requests whose bytes start with ``POST`` and name ``/build``."""

    def __init__(self, path: Path, drops: int) -> None:
        self.path = path
        self.drops = drops
        self.dropped = 0
        self.builds = 0  # build requests seen, dropped or not
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def stop(self) -> None:
        stop_accepting(self._listener, self._accepting)
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(engine_socket_path())
            with self._lock:
                self._sockets += [client, engine]
            for target in (self._towards_engine, self._pipe):
                pair = (client, engine) if target == self._towards_engine else (engine, client)
                threading.Thread(target=target, args=pair, daemon=True).start()

    def _towards_engine(self, client: socket.socket, engine: socket.socket) -> None:
        while data := _recv(client):
            if data.startswith(b"POST ") and b"/build" in data.split(b"\r\n", 1)[0]:
                with self._lock:
                    self.builds += 1
                    drop = self.dropped < self.drops
                    self.dropped += drop
                if drop:
                    break
            engine.sendall(data)
        _close(client, engine)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        while data := _recv(source):
            with suppress(OSError):
                sink.sendall(data)
        _close(source, sink)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "context"
    directory.mkdir()
    (directory / "a").write_text(secrets.token_hex(8))  # a layer of its own: a real build
    (directory / "Dockerfile").write_text("FROM busybox:latest\nCOPY a /a\n")
    return directory


def relayed_builder(tmp_path: Path, drops: int) -> Iterator[tuple[DockerBuilder, DroppingRelay]]:
    relay = DroppingRelay(tmp_path / "engine.sock", drops)
    builder = DockerBuilder(f"unix://{relay.path}")
    try:
        yield builder, relay
    finally:
        builder.close()
        relay.stop()


def test_a_build_whose_connection_closes_unanswered_goes_through_on_a_fresh_one(
    tmp_path: Path, context: Path
) -> None:
    tag = f"stackyard-test/builder{secrets.token_hex(3)}:latest"
    for builder, relay in relayed_builder(tmp_path, drops=1):
        lines: list[str] = []
        image_id = builder.build(
            context, dockerfile="Dockerfile", tags=[tag], network_mode="none", on_line=lines.append
        )
        try:
            assert (relay.dropped, relay.builds) == (1, 2)  # dropped, then sent again
            assert builder.image_id(tag) == image_id
            assert any("COPY a /a" in line for line in lines)
        finally:
            builder.remove_image(tag)


def test_the_same_fault_twice_is_a_clear_error(tmp_path: Path, context: Path) -> None:
    tag = f"stackyard-test/builder{secrets.token_hex(3)}:latest"
    for builder, relay in relayed_builder(tmp_path, drops=2):
        with pytest.raises(ComponentError, match="the Docker engine did not answer") as caught:
            builder.build(
                context, dockerfile="Dockerfile", tags=[tag], network_mode="none", on_line=print
            )
        assert "build again" in (caught.value.hint or "")
        assert relay.dropped == 2


def test_a_build_whose_cached_step_is_removed_under_it_builds_that_step_again(
    tmp_path: Path,
) -> None:
    # Another image made from the same steps is removed (with its untagged parents, as
    # retention or a stack deletion removes it) right after this build took its first step
    # from the cache: the engine then fails the build, naming that step's image. The build
    # runs once more and succeeds; its log says why. The large file makes the next step (the
    # COPY hashes it) slow enough that the removal always comes first.
    token = secrets.token_hex(6)
    dockerfile = f"FROM busybox:latest\nRUN echo {token} > /one\nCOPY f /f\n"
    small, large = tmp_path / "small", tmp_path / "large"
    for directory in (small, large):
        directory.mkdir()
        (directory / "Dockerfile").write_text(dockerfile)
    (small / "f").write_text("small")
    with (large / "f").open("wb") as out:
        for _ in range(96):
            out.write(secrets.token_bytes(1 << 20))
    sibling, tag = (f"stackyard-test/cachelost-{name}{token}:latest" for name in ("a", "b"))
    builder, remover = DockerBuilder(), DockerBuilder()
    try:
        builder.build(small, dockerfile="Dockerfile", tags=[sibling], network_mode="none",
                      on_line=lambda line: None)  # fmt: skip
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            if line.strip() == "---> Using cache" and lines.count(line) == 1:
                remover.remove_image(sibling)  # its parent, the cached step, goes with it

        image_id = builder.build(
            large, dockerfile="Dockerfile", tags=[tag], network_mode="none", on_line=on_line
        )
        assert builder.image_id(tag) == image_id
        said = [line for line in lines if "took from its cache" in line]
        assert len(said) == 1, lines
        assert "building again" in said[0]
    finally:
        for reference in (tag, sibling):
            remover.remove_image(reference)
        builder.close()
        remover.close()
