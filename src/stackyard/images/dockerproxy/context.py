"""A legacy build's context, read as it streams past the proxy for its Dockerfile alone.

The context (POST /build's body, a tar, perhaps gzipped) goes on to the engine chunk by
chunk; a copy of each chunk is fed to a :class:`ContextReader`, whose thread reads the tar
with :mod:`tarfile` and keeps only the Dockerfile's bytes (the query's ``dockerfile``, by
default ``Dockerfile`` or, as the engine falls back, ``dockerfile``). Nothing is spooled.
The tar is read as the engine's extraction reads it where the two could differ: the last
entry of a name wins, a Dockerfile reached through a link is not followed (refused), gzip
members are read one after another as Go's reader does, and a context the proxy cannot
read as the engine would (bzip2, xz or zstd, a global PAX header, a broken tar) is a
problem the build is refused for rather than a Dockerfile guessed at.
"""

from __future__ import annotations

import asyncio
import posixpath
import queue
import tarfile
import threading
import zlib
from dataclasses import dataclass

DEFAULT_DOCKERFILE = "Dockerfile"
MAX_DOCKERFILE = 4 * 1024 * 1024
_GZIP = b"\x1f\x8b"
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


@dataclass(frozen=True)
class BuildContext:
    """What the proxy found: the Dockerfile's bytes (None: the context has none, which the
    engine reports itself), or a problem the build is refused for."""

    dockerfile: bytes | None = None
    problem: str = ""


class ContextReader:
    """Reads one context on its own thread; :meth:`feed` from the event loop, then
    :meth:`finish` once the body has ended."""

    def __init__(self, dockerfile: str = "") -> None:
        self.dockerfile = dockerfile or DEFAULT_DOCKERFILE
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[BuildContext] = self._loop.create_future()
        threading.Thread(target=self._run, name="build-context", daemon=True).start()

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.put(data)

    async def finish(self) -> BuildContext:
        """The result, once the body's end has been fed."""
        self._chunks.put(None)
        return await self._done

    def abandon(self) -> None:
        """The body will not end (the client went away): let the thread go."""
        self._chunks.put(None)

    def _run(self) -> None:
        try:
            found = read_context(_Feed(self._chunks), self.dockerfile)
        except Exception as exc:  # the thread must always answer
            found = BuildContext(problem=f"the build context could not be read: {exc}")
        self._loop.call_soon_threadsafe(_settle, self._done, found)


def _settle(future: asyncio.Future[BuildContext], found: BuildContext) -> None:
    if not future.done():
        future.set_result(found)


class _Feed:
    """The chunks as a file to read (what :mod:`tarfile` needs), uncompressed."""

    def __init__(self, chunks: queue.SimpleQueue[bytes | None]) -> None:
        self._chunks = chunks
        self._pending = b""
        self._ended = False
        self._started = False
        self._gzip: zlib._Decompress | None = None

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size < 0 or len(self._pending) < size):
            chunk = self._chunks.get()
            if chunk is None:
                self._ended = True
                if self._gzip is not None and not self._gzip.eof:
                    raise ValueError("its gzip stream is cut short")
            else:
                self._take(chunk)
        if size < 0:
            size = len(self._pending)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def drain(self) -> None:
        """Take the rest of the body (to its end, as the engine does), discarding it."""
        while not self._ended:
            self._ended = self._chunks.get() is None
        self._pending = b""

    def _take(self, chunk: bytes) -> None:
        if not self._started:
            self._started = True
            for magic, name in _OTHER_COMPRESSION.items():
                if chunk.startswith(magic):
                    raise ValueError(
                        f"it is compressed with {name}, which the build proxy does not read; "
                        "send it uncompressed or gzipped (docker build --compress)"
                    )
            if chunk.startswith(_GZIP):
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._gzip is None:
            self._pending += chunk
            return
        # Go's gzip reader reads member after member (multistream): so does this.
        while chunk:
            self._pending += self._gzip.decompress(chunk)
            if not self._gzip.eof:
                return
            chunk = self._gzip.unused_data
            if chunk:
                if not chunk.startswith(_GZIP[: len(chunk)]):
                    raise ValueError("it has data after its gzip stream")
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)


def read_context(source: _Feed, dockerfile: str) -> BuildContext:
    """Read the context tar from ``source`` to its end; keep the Dockerfile."""
    try:
        found = _read_tar(source, dockerfile)
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        found = BuildContext(problem=f"the build context is not a tar the proxy can read: {exc}")
    source.drain()  # whatever was decided: the body still streams past
    return found


def _read_tar(source: _Feed, dockerfile: str) -> BuildContext:
    wanted = _normal(dockerfile)
    candidates = [wanted] + (["dockerfile"] if wanted == DEFAULT_DOCKERFILE else [])
    watched = {prefix for name in candidates for prefix in _prefixes(name)}
    last: dict[str, tuple[str, bytes]] = {}  # name -> (kind, Dockerfile bytes)
    with tarfile.open(fileobj=source, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            name = _normal(member.name)
            if name not in watched:
                continue
            if member.issym() or member.islnk():
                last[name] = ("link", b"")
            elif member.isreg() and name in candidates:
                if member.size > MAX_DOCKERFILE:
                    return BuildContext(problem=f"its Dockerfile {dockerfile} is larger "
                                        f"than {MAX_DOCKERFILE // 1024**2} MiB")  # fmt: skip
                handle = tar.extractfile(member)
                last[name] = ("file", handle.read() if handle is not None else b"")
            else:
                last[name] = ("other", b"")
        if tar.pax_headers:
            return BuildContext(problem="it has a global PAX header, which the engine "
                                "ignores and Python's tar reader does not")  # fmt: skip
    for name in candidates:
        linked = [p for p in _prefixes(name) if last.get(p, ("", b""))[0] == "link"]
        if linked:
            return BuildContext(problem=f"its Dockerfile {dockerfile} is reached through "
                                f"the link {linked[0]}: name the file itself (-f)")  # fmt: skip
        if name not in last:
            continue
        kind, data = last[name]
        return BuildContext(dockerfile=data if kind == "file" else None)
    return BuildContext()


def _normal(path: str) -> str:
    return posixpath.normpath("/" + path).lstrip("/")


def _prefixes(path: str) -> list[str]:
    """``a``, ``a/b``, ``a/b/Dockerfile`` for ``a/b/Dockerfile``."""
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
