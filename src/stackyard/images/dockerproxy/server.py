"""The build proxy's server: one asyncio loop on its own thread, one unix socket per build.

Each request a build's docker client sends is read with h11, decided by ``rules.decide``,
and either refused (a JSON ``{"message": ...}`` the docker CLI prints as "Error response
from daemon: ...") or sent on to the engine's socket with the query and headers the
decision names, streaming both ways: a build context and a push's progress never sit in
memory. A BuildKit session (POST /session) is switched to h2c and relayed both ways, frame
by frame, until either side closes; the Dockerfile sent on it is judged on the way
(``session``). Builds and releases open a socket with :meth:`BuildProxy.open`;
``stackyard buildspec run`` makes its own proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import h11

from stackyard.errors import ComponentError, StackyardError, UsageError
from stackyard.images.dockerproxy.budget import hold_buildkit_steps
from stackyard.images.dockerproxy.built import BuiltImage
from stackyard.images.dockerproxy.context import BuildContext, ContextReader
from stackyard.images.dockerproxy.dockerfile import (
    DockerfileError,
    NamedImage,
    frontend_directive,
    named_images,
    trigger_images,
)
from stackyard.images.dockerproxy.leases import NAME_WAIT, NameLeases, RunNames
from stackyard.images.dockerproxy.rules import (
    Answer,
    ApiRequest,
    BuildScope,
    Decision,
    Forward,
    Refuse,
    api_path,
    build_args,
    decide,
    dockerfile_refusal,
    is_true,
    judge,
    local_names,
    names_shown,
    pull_auth,
    pull_refusal,
    pull_request,
    registry_auth_header,
    unreadable_name,
    visible,
    without_registry,
)
from stackyard.images.dockerproxy.session import (
    DIFF_COPY,
    DOCKERFILE_DIR,
    GOAWAY,
    RST_STREAM,
    DockerfileWatch,
    Frame,
    FrameSplitter,
    HeaderBlocks,
    SessionError,
    Verdict,
    error_frame,
    file_sync_call,
    settings_table_size,
)
from stackyard.images.push_retry import push_may_succeed_later

log = logging.getLogger(__name__)

DEFAULT_ENGINE_SOCKET = "/var/run/docker.sock"
NAMES_FILE = "build-image-names.json"  # ImageNames' file in the data directory
_READ_SIZE = 65536
_SESSION_HEADER = b"x-docker-expose-session-uuid"
_SHARED_KEY_HEADER = b"x-docker-expose-session-sharedkey"
_SESSION_WAIT = 10.0  # seconds a BuildKit build waits for the session its CLI opens alongside
_SMALL_BODY = 1024 * 1024  # bodies a decision reads (/auth), or that a refusal drains
_MAX_HELD = 16 * 1024 * 1024  # what a session may send while its Dockerfile is judged
_END_WAIT = 30.0  # seconds a socket's close waits for its run's names to be removed
_REFUSED_GRACE = 1.0  # seconds a refused session stays open: the engine reads why first
_MAX_HEAD = 256 * 1024  # request heads: X-Registry-Config holds a login per registry
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"host"}
)
_AUTH_HEADERS = frozenset({b"x-registry-auth", b"x-registry-config"})
_UNCLAIMED = "Stackyard's build proxy refused the request: this build container serves no build yet"


def engine_socket_path() -> str:
    """The engine's unix socket: ``$DOCKER_HOST`` when it names one, else the default."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    return DEFAULT_ENGINE_SOCKET


class _UnreadableName(UsageError):
    """The engine cannot parse an image name a request or a Dockerfile gives (400)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


class ImageNames:
    """Which stack's build named which local image (``name:tag``): the proxy's record of
    ownership, kept in ``path`` (JSON) when given, so it outlives a restart."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.owners: dict[str, str] = {}
        if path is not None and path.is_file():
            with contextlib.suppress(ValueError, OSError):
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.owners = {str(k): str(v) for k, v in dict(loaded).items()}

    def record(self, names: tuple[str, ...], stack: str) -> None:
        changed = {name: stack for name in names if self.owners.get(name) != stack}
        if not changed:
            return
        self.owners.update(changed)
        self._save()

    def forget(self, names: Collection[str]) -> None:
        """``names`` are gone from the engine: no stack's any more."""
        gone = [name for name in names if name in self.owners]
        for name in gone:
            del self.owners[name]
        if gone:
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.owners, sort_keys=True), encoding="utf-8")
            partial.replace(self.path)


class ProxySocket:
    """One build's socket: where it listens, the scope it applies, what it refused.

    A socket opened ``claimed=False`` (a warm build container's, made before any stack is
    known) refuses every request until :meth:`claim` gives it its build's scope."""

    def __init__(self, path: Path, scope: BuildScope, *, claimed: bool = True) -> None:
        self.path = path
        self.scope = scope
        self.claimed = claimed
        self.refusals: list[str] = []
        self.opened: set[str] = set()  # BuildKit sessions and builds passed on
        self.run_names = RunNames()  # the local image names this run holds and made
        self.built: set[str] = set()  # ids of the images this build's docker builds made
        self.buildkit_builds = 0  # BuildKit builds passed on (their steps share a budget)
        self.relays: set[asyncio.StreamWriter] = set()  # both ends of each open session
        self.session_builds: dict[str, Forward] = {}  # BuildKit session -> the build it serves
        # Where the proxy says why a request waits (the command's build log), while one runs.
        self.notice: Callable[[str], None] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._close: Callable[[], None] = lambda: None

    def nest_builds_in(self, cgroup_parent: str | None) -> None:
        """RUN steps of this build's ``docker build`` run in ``cgroup_parent`` (the build
        container's cgroup), so they share its limits."""
        self.scope = replace(self.scope, cgroup_parent=cgroup_parent)

    def claim(self, scope: BuildScope) -> None:
        """From now on, serve the build of ``scope`` (its RUN steps still nest where
        :meth:`nest_builds_in` said)."""
        self.scope = replace(scope, cgroup_parent=self.scope.cgroup_parent)
        self.claimed = True

    def close(self) -> None:
        self._close()


class BuildProxy:
    """The filtering proxy of the engine's API; every build's socket is served here.

    ``scratch_names``: the local names a run's requests made are removed from the engine
    (and forgotten) when its socket closes, as CodeBuild's fresh environment for each build
    has none of the last build's (the platform's proxy; ``stackyard buildspec run`` keeps
    them on the developer's engine). ``name_wait``: how long a run waits for a local name
    another run holds (``leases``)."""

    def __init__(
        self,
        engine_socket: str | None = None,
        *,
        names_file: Path | None = None,
        scratch_names: bool = False,
        name_wait: float = NAME_WAIT,
    ) -> None:
        self.engine_socket = engine_socket or engine_socket_path()
        self.names = ImageNames(names_file)  # touched on the proxy's loop thread only
        self.scratch_names = scratch_names
        self.leases = NameLeases(name_wait)  # touched on the proxy's loop thread only
        self._loop: asyncio.AbstractEventLoop | None = None  # started by the first open
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._starting:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="build-proxy", daemon=True
                )
                self._thread.start()
            return self._loop

    def open(self, scope: BuildScope, *, claimed: bool = True) -> ProxySocket:
        """Listen on a new socket (in a fresh directory only root may enter) for one build;
        ``claimed=False``: for no build yet (:meth:`ProxySocket.claim`)."""
        loop = self._running_loop()
        directory = Path(tempfile.mkdtemp(prefix="stackyard-proxy-"))
        path = directory / "docker.sock"
        socket = ProxySocket(path, scope, claimed=claimed)
        socket.run_names.scratch = self.scratch_names
        served = asyncio.run_coroutine_threadsafe(self._listen(socket), loop)
        try:
            socket._server = served.result(timeout=10)
        except (OSError, TimeoutError) as exc:
            raise ComponentError(f"the build proxy cannot listen on {path}: {exc}") from exc
        path.chmod(0o666)  # run-as users in the build container connect too

        def close() -> None:
            server = socket._server
            socket._server = None
            if server is not None and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(self._end(server, socket), loop)
                with contextlib.suppress(TimeoutError, RuntimeError):
                    future.result(timeout=_END_WAIT)
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()

        socket._close = close
        return socket

    async def _end(self, server: asyncio.AbstractServer, socket: ProxySocket) -> None:
        """The run is over: its socket stops, the local names it made are removed (when
        ``scratch_names``), then the names it held go to the runs waiting for them."""
        run = socket.run_names
        run.ended = True  # its own wait for a name, if any, ends
        try:
            await _stop(server, socket.relays)
            if self.scratch_names:
                await _untag_all(self.engine_socket, self.names, sorted(run.made))
        finally:
            self.leases.end(run)

    def untag_leftovers(self) -> list[str]:
        """At start (``scratch_names``): remove and forget the local names that runs made
        on a stopped platform (and, kept by earlier versions, every name every run made,
        which kept other stacks' runs from using it), but those a run holds now."""
        if not self.scratch_names or not self.names.owners:
            return []
        future = asyncio.run_coroutine_threadsafe(self._untag_leftovers(), self._running_loop())
        try:
            return future.result(timeout=_END_WAIT * 4)
        except TimeoutError:
            future.cancel()
            log.warning("the engine did not remove the local names of stopped builds in time")
            return []

    async def _untag_leftovers(self) -> list[str]:
        held = self.leases.holder
        leftovers = [name for name in self.names.owners if held(name) is None]
        return await _untag_all(self.engine_socket, self.names, leftovers)

    def close(self) -> None:
        with self._starting:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    async def _listen(self, socket: ProxySocket) -> asyncio.AbstractServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connection = _Connection(
                socket, reader, writer, self.engine_socket, self.names, self.leases
            )
            try:
                await connection.serve()
            except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
                log.debug("build proxy connection of %s ended: %s", socket.scope.stack, exc)
            except Exception as exc:
                log.exception("build proxy of %s failed on a request", socket.scope.stack)
                await connection.fail(exc)
            finally:
                await connection.close()

        return await asyncio.start_unix_server(serve, path=str(socket.path))


async def _untag_all(engine_socket: str, names: ImageNames, local: list[str]) -> list[str]:
    """Remove each of the ``local`` names from the engine (``noprune``: the image stays while
    it has another name, a pushed one, and its parent layers stay for the next build's
    cache), and forget it in ``names``; the names removed (or gone already)."""
    statuses = await asyncio.gather(*(_untag(engine_socket, name) for name in local))
    gone = [name for name, ok in zip(local, statuses, strict=True) if ok]
    names.forget(gone)
    return gone


async def _untag(engine_socket: str, name: str) -> bool:
    """``DELETE /images/NAME?noprune=1``: whether the name is gone from the engine now. It
    stays when the engine refuses (a container uses the image by that name alone)."""
    target = f"/images/{quote(name, safe='/:@')}?noprune=1"
    try:
        status, body = await _engine_call(engine_socket, "DELETE", target)
    except (ComponentError, ConnectionError, OSError, h11.ProtocolError) as exc:
        log.warning("the build proxy could not remove the local name %s: %s", name, exc)
        return False
    if status in (200, 404):
        return True
    log.warning("the engine kept the local name %s (%s): %s", name, status, _engine_message(body))
    return False


async def _engine_call(engine_socket: str, method: str, target: str) -> tuple[int, bytes]:
    """One small request of the proxy's own to the engine: its status and body."""
    upstream = await _Upstream.connect(engine_socket)
    try:
        await upstream.send(_request_event(method, target, []))
        await upstream.send(h11.EndOfMessage())
        return await upstream.whole_response()
    finally:
        await upstream.close()


async def _stop(server: asyncio.AbstractServer, relays: set[asyncio.StreamWriter]) -> None:
    for writer in list(relays):  # a session outlives no build
        writer.close()
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), timeout=5)


class _Upstream:
    """One HTTP/1.1 connection to the engine's socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, path: str) -> _Upstream:
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=_READ_SIZE)
        except OSError as exc:
            raise ComponentError(f"the Docker engine at {path} did not answer: {exc}") from exc
        return cls(reader, writer)

    async def send(self, event: h11.Event) -> None:
        data = self.http.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_event(self) -> h11.Event:
        return await _next_event(self.http, self.reader)

    async def whole_response(self) -> tuple[int, bytes]:
        """Status and body of a response small enough to hold (an inspect, a listing)."""
        status, chunks = 0, []
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, b"".join(chunks)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def _next_event(http: h11.Connection, reader: asyncio.StreamReader) -> h11.Event:
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]
        data = await reader.read(_READ_SIZE)
        http.receive_data(data)


class _Connection:
    """One connection of a build's docker client: request after request, each decided."""

    def __init__(
        self,
        socket: ProxySocket,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        engine_socket: str,
        names: ImageNames,
        leases: NameLeases,
    ) -> None:
        self.socket = socket
        self.names = names
        self.leases = leases
        self.status = 0  # of the last response sent on
        # The request being forwarded, when it writes local names (``_record``).
        self._records: Forward | None = None
        self.reader = reader
        self.writer = writer
        self.engine_socket = engine_socket
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.upstream: _Upstream | None = None

    async def serve(self) -> None:
        while True:
            event = await _next_event(self.http, self.reader)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            keep_going = await self._request(event)
            if not keep_going or self.http.our_state is not h11.DONE:
                return
            if self.http.their_state is not h11.DONE:
                return
            self.http.start_next_cycle()

    async def fail(self, exc: Exception) -> None:
        """Answer 502 naming ``exc`` when no answer has started: a connection closed in
        silence reads as "Remote end closed connection without response" to the client."""
        if self.http.our_state is not h11.SEND_RESPONSE:
            return
        message = f"Stackyard's build proxy failed: {exc}"
        with contextlib.suppress(ConnectionError, OSError, h11.LocalProtocolError):
            await self._json(502, {"message": message}, close=True)

    async def close(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def _request(self, request: h11.Request) -> bool:
        target = request.target.decode("latin-1")
        parts = urlsplit(target)
        path = api_path(parts.path)
        if path is None:
            await self._refuse(Refuse(400, f"Stackyard's build proxy refused the path {target!r}"))
            return False
        if not self.socket.claimed:
            await self._refuse(Refuse(503, _UNCLAIMED))
            return False
        body = b""
        if path == "/auth":
            body = await self._read_body(_SMALL_BODY)
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {bytes(k).lower(): bytes(v).decode("latin-1") for k, v in request.headers}
        api_request = ApiRequest(
            request.method.decode("ascii"), path, query, body,
            upgrade=headers.get(b"upgrade", ""), session=headers.get(_SESSION_HEADER, ""),
        )  # fmt: skip
        if path == "/build":
            await self._session_of(query)
        decision = decide(api_request, self.socket.scope, self.socket.opened)
        if isinstance(decision, Forward) and decision.build:
            config = headers.get(b"x-registry-config", "")
            config = without_registry(config, *self.socket.scope.registries)
            decision = replace(decision, registry_config=config)
        if isinstance(decision, Forward) and decision.buildkit:
            decision = self._one_build_per_session(decision)
        if isinstance(decision, Forward) and decision.buildkit:
            decision = self._budgeted(decision)
        if isinstance(decision, Forward):
            try:
                decision = await self._judged(decision)
            except (StackyardError, ValueError) as exc:
                decision = Refuse(502, f"Stackyard's build proxy could not check the image: {exc}")
        if isinstance(decision, Refuse):
            await self._refuse(decision)
            return False
        if isinstance(decision, Answer):
            await self._answer(decision.status, decision.body)
            return True
        if decision.session:
            await self._relay_session(request, parts.path, decision)
            return False
        return await self._forward(request, parts.path, decision, body)

    async def _session_of(self, query: dict[str, list[str]]) -> None:
        """Wait for the BuildKit session a build names: the CLI opens it alongside."""
        session = (query.get("session") or [""])[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SESSION_WAIT
        while session and session not in self.socket.opened and loop.time() < deadline:
            await asyncio.sleep(0.05)

    def _one_build_per_session(self, decision: Forward) -> Decision:
        """A BuildKit build's session serves it alone: the Dockerfile read on the session
        is judged with this build's options (its file name, its build-args)."""
        session = (decision.query.get("session") or [""])[0]
        if session in self.socket.session_builds:
            return Refuse(403, f"Stackyard's build proxy refused a BuildKit build: its "
                          f"session {session} served a build already; each docker build "
                          "opens its own")  # fmt: skip
        self.socket.session_builds[session] = decision
        return decision

    def _budgeted(self, decision: Forward) -> Decision:
        """A BuildKit build, once the engine's BuildKit cgroup holds the build's limits."""
        try:
            hold_buildkit_steps(self.socket.scope.limits)
        except ComponentError as exc:
            return Refuse(403, f"Stackyard's build proxy refused a BuildKit build: {exc}. "
                          "Set DOCKER_BUILDKIT=0.")  # fmt: skip
        self.socket.buildkit_builds += 1
        build_id = decision.query.get("buildid", [""])[0]
        if build_id:
            self.socket.opened.add(build_id)  # the CLI may cancel it
        return decision

    async def _relay_session(self, request: h11.Request, raw_path: str, decision: Forward) -> None:
        """POST /session: the connection switches to h2c (gRPC the engine calls into) and
        bytes go both ways until either side closes or the build's socket does."""
        await self._read_body(_SMALL_BODY)  # none is sent; h11 must see its end
        self.socket.opened.add(decision.session)
        upstream = await _Upstream.connect(self.engine_socket)
        try:
            headers = _forward_headers(request.headers, decision)
            # The session's shared key names what BuildKit keeps of its context between
            # builds: one stack's may not be another's, and none is kept from one session
            # to the next (the Dockerfile is then always sent, so the proxy always reads it).
            salt = secrets.token_bytes(16)
            headers = [
                (k, _stack_key(self.socket.scope.stack, salt + v) if k == _SHARED_KEY_HEADER else v)
                for k, v in headers
            ]
            headers += [(b"connection", b"Upgrade"), (b"upgrade", b"h2c")]
            await upstream.send(_request_event("POST", raw_path, headers))
            await upstream.send(h11.EndOfMessage())
            event = await upstream.next_event()
            if not (isinstance(event, h11.InformationalResponse) and event.status_code == 101):
                await self._pass_refusal(upstream, event)
                return
            await self._send(h11.InformationalResponse(
                status_code=101, headers=[(b"connection", b"Upgrade"), (b"upgrade", b"h2c")]
            ))  # fmt: skip
            checked = _CheckedSession(self, decision.session)
            await _relay(
                (self.reader, self.http.trailing_data[0]),
                (upstream.reader, upstream.http.trailing_data[0]),
                self.writer, upstream.writer, self.socket.relays, checked,
            )  # fmt: skip
        finally:
            await upstream.close()

    async def _pass_refusal(self, upstream: _Upstream, event: h11.Event) -> None:
        """The engine's answer to a session it did not switch, passed on as it gave it."""
        if not isinstance(event, h11.Response):
            raise ConnectionError("the engine closed the connection mid-response")
        await self._pass_head(event, [(b"connection", b"close")])
        await self._pump_response(upstream)

    async def _judged(self, decision: Forward) -> Decision:
        """Hold the local names the request writes (waiting for the run that holds one),
        then ask the engine about every image it reads or writes, and judge; a refused
        request holds no name it did not hold before."""
        scope, run = self.socket.scope, self.socket.run_names
        names = local_names(decision.writes, scope)
        taken, busy = await self.leases.take(names, run, scope.stack, self._notice)
        if busy is not None:
            return Refuse(409, busy)
        try:
            judged = await self._judged_names(decision)
        except BaseException:
            self.leases.give_back(taken, run)
            raise
        if not isinstance(judged, Forward):
            self.leases.give_back(taken, run)
        return judged

    def _notice(self, text: str) -> None:
        """Say ``text`` in the run's build log (when it listens); never fails the request."""
        notice = self.socket.notice
        if notice is None:
            return
        try:
            notice(text)
        except Exception:
            log.exception(
                "the build proxy of %s could not say why it waits", self.socket.scope.stack
            )

    async def _judged_names(self, decision: Forward) -> Decision:
        """Ask the engine about every image the request reads or writes, then judge."""
        checks: list[tuple[str, Literal["read", "write"]]] = [
            *((name, "read") for name in decision.reads),
            *((name, "write") for name in decision.writes),
        ]
        # One engine round trip for them all (a tag reads its source and writes its target).
        try:
            images = await asyncio.gather(*(self._inspect(name) for name, _ in checks))
        except _UnreadableName as exc:
            return Refuse(400, exc.reason)  # the engine's own answer, naming the name
        scope, names, built = self.socket.scope, self.names.owners, self.socket.built
        for (name, purpose), image in zip(checks, images, strict=True):
            refusal = judge(name, image, scope, purpose, names, built)
            if refusal is not None:
                return refusal
        return decision

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        status, body = await self._engine_get(f"/images/{quote(name, safe='/:@')}/json")
        if status == 404:
            return None
        if status == 400:
            raise _UnreadableName(name, _engine_message(body))
        if status != 200:
            raise ComponentError(f"the engine answered {status} to an inspect of {name}")
        found = json.loads(body)
        return found if isinstance(found, dict) else None

    async def _engine_get(self, target: str) -> tuple[int, bytes]:
        return await _engine_call(self.engine_socket, "GET", target)

    async def _forward(
        self, request: h11.Request, raw_path: str, decision: Forward, body: bytes
    ) -> bool:
        if self.upstream is None:
            self.upstream = await _Upstream.connect(self.engine_socket)
        upstream = self.upstream
        self._records = decision if decision.records else None
        query = urlencode(decision.query, doseq=True)
        target = raw_path + (f"?{query}" if query else "")
        headers = _forward_headers(request.headers, decision)
        method = request.method.decode("ascii")
        await upstream.send(_request_event(method, target, headers))
        if body:
            await upstream.send(h11.Data(data=body))
        built = BuiltImage(quiet=is_true(decision.query, "q")) if decision.build else None
        if decision.dockerfile is not None:
            return await self._forward_build(upstream, decision, built)
        sending = asyncio.create_task(self._pump_body(upstream))
        try:
            if decision.filter_listing:
                await self._pump_listing(upstream)
            elif decision.filter_names:
                await self._pump_names(upstream, decision.filter_names)
            elif decision.retry_for:
                await sending  # a push has no body: it is all sent
                await self._pump_push(upstream, decision.retry_for, (method, target, headers))
            else:
                await self._pump_response(upstream, built)
            await sending
        except BaseException:
            sending.cancel()
            raise
        return await self._answered(upstream, decision, built)

    def _made(self, built: BuiltImage | None) -> None:
        """Remember the image a build of this socket made: it is the stack's, name or not."""
        image = built.image if built is not None and 200 <= self.status < 300 else None
        if image is not None:
            self.socket.built.add(image)

    async def _answered(
        self, upstream: _Upstream, decision: Forward, built: BuiltImage | None = None
    ) -> bool:
        """After the engine's answer: record the names and image it made, keep or drop its
        connection."""
        await self._recorded_late()
        self._made(built)
        upstream = self.upstream or upstream
        if upstream.http.our_state is h11.DONE and upstream.http.their_state is h11.DONE:
            upstream.http.start_next_cycle()
        else:
            await upstream.close()
            self.upstream = None
        return True

    async def _forward_build(
        self, upstream: _Upstream, decision: Forward, built: BuiltImage | None
    ) -> bool:
        """A legacy build: its context goes on as it arrives, all but its last piece, until
        the Dockerfile read from it has been judged; the engine starts no build before the
        body's end. A refused build's connection to the engine is cut (the build fails
        there on a context cut short) and the client gets the refusal."""
        sending = asyncio.create_task(self._pump_checked_body(upstream, decision))
        answering = asyncio.create_task(self._pump_response(upstream, built))
        try:
            done, _ = await asyncio.wait({sending, answering}, return_when=asyncio.FIRST_COMPLETED)
            refusal = sending.result() if sending in done else None
            if refusal is not None:
                answering.cancel()
                await asyncio.gather(answering, return_exceptions=True)
                await upstream.close()
                self.upstream = None
                if self.http.our_state is h11.SEND_RESPONSE:
                    await self._refuse(refusal)
                return False
            await answering
            await sending
        except BaseException:
            sending.cancel()
            answering.cancel()
            raise
        return await self._answered(upstream, decision, built)

    async def _pump_checked_body(self, upstream: _Upstream, decision: Forward) -> Refuse | None:
        """The build context, on to the engine one piece behind, read on the way for its
        Dockerfile; the last piece and the body's end go on once the Dockerfile passed."""
        reader = ContextReader(decision.dockerfile or "")
        held: bytes | None = None
        try:
            while self.http.their_state is not h11.DONE:
                event = await _next_event(self.http, self.reader)
                if isinstance(event, h11.EndOfMessage):
                    break
                if not isinstance(event, h11.Data):
                    raise ConnectionError("the build's docker client went away mid-request")
                data = bytes(event.data)
                reader.feed(data)
                if held is not None:
                    await upstream.send(h11.Data(data=held))
                held = data
        except BaseException:
            reader.abandon()
            raise
        refusal = await self._dockerfile_refusal(await reader.finish(), decision)
        if refusal is not None:
            return refusal
        if held is not None:
            await upstream.send(h11.Data(data=held))
        await upstream.send(h11.EndOfMessage())
        return None

    async def _dockerfile_refusal(self, found: BuildContext, decision: Forward) -> Refuse | None:
        """Judge every image the build's Dockerfile names (and the ONBUILD triggers of the
        images it builds from), asking the engine about each."""
        dockerfile = decision.dockerfile or ""
        if found.problem:
            return Refuse(403, f"Stackyard's build proxy refused the build: {found.problem}")
        if found.dockerfile is None:
            return None  # the engine says the Dockerfile is missing
        try:
            named = named_images(found.dockerfile, build_args(decision.query))
        except DockerfileError as exc:
            return Refuse(400, f"Stackyard's build proxy cannot read {dockerfile}: {exc}")
        try:
            images = await self._inspect_all([n.name for n in named])
            refusal = self._first_refusal(dockerfile, named, images)
            if refusal is None:
                refusal = await self._pull_bases(dockerfile, named, images, decision)
            if refusal is not None:
                return refusal
            triggered = [
                trigger
                for image, base in zip(images, named, strict=True)
                if image is not None and base.kind == "FROM"
                for trigger in trigger_images(_on_build(image), base)
            ]
            named += triggered
            images += await self._inspect_all([n.name for n in triggered])
        except _UnreadableName as exc:
            bad = next((n for n in named if n.name == exc.name), None)
            if bad is None:
                return Refuse(400, exc.reason)
            return unreadable_name(dockerfile, bad, exc.reason)
        except (StackyardError, ValueError) as exc:
            return Refuse(502, f"Stackyard's build proxy could not check {dockerfile}: {exc}")
        return self._first_refusal(dockerfile, named, images)

    def _first_refusal(
        self, dockerfile: str, named: list[NamedImage], images: list[dict[str, Any] | None]
    ) -> Refuse | None:
        scope, names, built = self.socket.scope, self.names.owners, self.socket.built
        for each, image in zip(named, images, strict=True):
            refusal = dockerfile_refusal(dockerfile, each, image, scope, names, built)
            if refusal is not None:
                return refusal
        return None

    async def _pull_bases(
        self,
        dockerfile: str,
        named: list[NamedImage],
        images: list[dict[str, Any] | None],
        decision: Forward,
    ) -> Refuse | None:
        """Pull each base image the engine would pull during the build (one it does not
        hold, or every one for ``--pull``), so that its ONBUILD triggers, which run in this
        build, are judged before the build starts; ``images`` then holds what was pulled.
        The pull uses the build's own login for that registry (the stack's own repository:
        the stack's), never the platform's, and the build's platform."""
        wanted = [
            i
            for i, (each, image) in enumerate(zip(named, images, strict=True))
            if each.kind == "FROM"
            and (image is None or decision.pull_first)
            and pull_request(each.name) is not None
        ]
        names = list(dict.fromkeys(named[i].name for i in wanted))
        platform = (decision.query.get("platform") or [""])[0]
        errors = await asyncio.gather(
            *(self._pull(name, decision.registry_config, platform) for name in names)
        )
        failed = dict(zip(names, errors, strict=True))
        for i in wanted:
            error = failed[named[i].name]
            if error is not None:
                return pull_refusal(dockerfile, named[i], error)
        pulled = await self._inspect_all(names)
        found = dict(zip(names, pulled, strict=True))
        for i in wanted:
            images[i] = found[named[i].name]
            if images[i] is None:
                return pull_refusal(dockerfile, named[i], "the engine does not hold it after "
                                    "the pull (another platform's image?)")  # fmt: skip
        return None

    async def _pull(self, name: str, registry_config: str, platform: str) -> str | None:
        """The engine pulls ``name`` for the build; the error it gave, or None."""
        request = pull_request(name)
        if request is None:
            return "an image id cannot be pulled"
        image, tag = request
        query = {"fromImage": image, "tag": tag, **({"platform": platform} if platform else {})}
        auth = pull_auth(registry_config, name, self.socket.scope)
        headers = [(b"x-registry-auth", auth.encode())] if auth else []
        upstream = await _Upstream.connect(self.engine_socket)
        try:
            target = f"/images/create?{urlencode(query)}"
            await upstream.send(_request_event("POST", target, headers))
            await upstream.send(h11.EndOfMessage())
            return await _pull_error(upstream)
        finally:
            await upstream.close()

    async def _session_dockerfile_refusal(
        self, build: Forward, path: str, content: bytes
    ) -> Refuse | None:
        """A BuildKit build's Dockerfile, read on its session: no frontend of its own, then
        the legacy build's judge."""
        directive = frontend_directive(content)
        if directive is not None:
            line, text = directive
            return Refuse(403, f"Stackyard's build proxy refused the build: {path} line {line} "
                          f"({text}) names a Dockerfile frontend image, which could read "
                          "images the proxy does not check; remove the line (the engine's "
                          "built-in frontend reads the Dockerfile)")  # fmt: skip
        return await self._dockerfile_refusal(
            BuildContext(dockerfile=content), replace(build, dockerfile=path)
        )

    async def _inspect_all(self, names: list[str]) -> list[dict[str, Any] | None]:
        """The engine's record of each name, one round trip for all (a name asked twice
        is asked once)."""
        unique = list(dict.fromkeys(names))
        found = await asyncio.gather(*(self._inspect(name) for name in unique))
        by_name = dict(zip(unique, found, strict=True))
        return [by_name[name] for name in names]

    async def _pump_body(self, upstream: _Upstream) -> None:
        """The client's request body, on to the engine as it arrives."""
        if upstream.http.our_state is h11.DONE:
            return
        while True:
            if self.http.their_state is h11.DONE:
                await upstream.send(h11.EndOfMessage())
                return
            event = await _next_event(self.http, self.reader)
            if isinstance(event, h11.Data):
                await upstream.send(h11.Data(data=bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                await upstream.send(h11.EndOfMessage())
                return
            else:
                raise ConnectionError("the build's docker client went away mid-request")

    async def _pass_head(
        self, event: h11.Response, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """The engine's status and headers, on to the client (with ``extra`` headers)."""
        self.status = event.status_code
        self._record()
        headers = [*_response_headers(event), *(extra or [])]
        await self._send(h11.Response(status_code=event.status_code, headers=headers))

    async def _pump_response(self, upstream: _Upstream, built: BuiltImage | None = None) -> None:
        """The engine's answer, on to the client as it comes (a build's read by ``built``
        on the way)."""
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Response):
                await self._pass_head(event)
            elif isinstance(event, h11.Data):
                if built is not None:
                    built.feed(bytes(event.data))
                await self._send(h11.Data(data=bytes(event.data)))
            elif isinstance(event, h11.EndOfMessage):
                await self._send(h11.EndOfMessage())
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the engine closed the connection mid-response")

    async def _pump_push(
        self,
        upstream: _Upstream,
        retry_for: float,
        request: tuple[str, str, list[tuple[bytes, bytes]]],
    ) -> None:
        """A push's progress, on to the client line by line. An error the registry gives
        only for now (read-only for its garbage collection, restarting) is held back and
        the push sent again (the engine skips the layers already there), until it goes
        through or ``retry_for`` seconds pass; then the last error goes on."""
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + retry_for, 0.5
        while True:
            error = await self._relay_push(upstream)
            if error is None or loop.time() >= deadline or not push_may_succeed_later(error):
                break
            await self._send_line({"status": f"the registry refused the push for now "
                                   f"({error.strip()}); retrying in {pause:.1f} s"})  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, 4.0)
            await upstream.close()
            upstream = self.upstream = await _Upstream.connect(self.engine_socket)
            method, target, headers = request
            await upstream.send(_request_event(method, target, headers))
            await upstream.send(h11.EndOfMessage())
        if error is not None:
            await self._send_line({"errorDetail": {"message": error}, "error": error})
        if self.http.our_state is h11.SEND_BODY:  # a refusal passed on has ended already
            await self._send(h11.EndOfMessage())

    async def _relay_push(self, upstream: _Upstream) -> str | None:
        """One push's answer, passed on but for its end and an error line (returned). A
        refusal of the first attempt (no such image: 404) goes on as the engine gave it."""
        pending, error = b"", None
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Response):
                first = self.http.our_state is h11.SEND_RESPONSE
                if first and event.status_code != 200:
                    await self._pass_head(event)
                    await self._pump_response(upstream)
                    return None
                if event.status_code != 200:  # a retry refused outright: its body says why
                    status, body = event.status_code, (await upstream.whole_response())[1]
                    return f"HTTP {status}: {body.decode(errors='replace').strip()}"
                if first:
                    await self._pass_head(event)
            elif isinstance(event, h11.Data):
                pending += bytes(event.data)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    error = await self._push_line(line) or error
            elif isinstance(event, h11.EndOfMessage):
                if pending.strip():
                    error = await self._push_line(pending) or error
                return error
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the engine closed the connection mid-response")

    async def _push_line(self, line: bytes) -> str | None:
        """Pass one line of a push's progress on, unless it is the push's error."""
        error = _progress_error(line)
        if error is not None:
            return error
        if line.strip():
            await self._send(h11.Data(data=line + b"\n"))
        return None

    async def _send_line(self, body: dict[str, Any]) -> None:
        await self._send(h11.Data(data=json.dumps(body).encode() + b"\n"))

    async def _pump_listing(self, upstream: _Upstream) -> None:
        """GET /images/json, with other stacks' images left out."""
        status, body = await upstream.whole_response()
        listing = json.loads(body or b"[]")
        if status == 200 and isinstance(listing, list):
            listing = visible(listing, self.socket.scope, self.names.owners, self.socket.built)
        await self._json(status, listing)

    async def _pump_names(self, upstream: _Upstream, how: Literal["inspect", "history"]) -> None:
        """An image's inspect or history, without other stacks' names of it."""
        status, body = await upstream.whole_response()
        if status == 200:
            answer = names_shown(json.loads(body), how, self.socket.scope, self.names.owners)
            body = json.dumps(answer).encode()
        self.status = status
        await self._json_bytes(status, body)

    async def _read_body(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while self.http.their_state is not h11.DONE:
            event = await _next_event(self.http, self.reader)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size <= limit:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise ConnectionError("the build's docker client went away mid-request")
        return b"".join(chunks)

    async def _refuse(self, refusal: Refuse) -> None:
        self.socket.refusals.append(refusal.message)
        log.info("build proxy of %s: %s", self.socket.scope.stack, refusal.message)
        # Read what the client still sends (a container's JSON), so it sees the answer.
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, h11.ProtocolError):
            await asyncio.wait_for(self._read_body(_SMALL_BODY), timeout=5)
        await self._json(refusal.status, {"message": refusal.message}, close=True)

    async def _answer(self, status: int, body: dict[str, Any]) -> None:
        await self._json(status, body)

    async def _json(self, status: int, body: object, *, close: bool = False) -> None:
        await self._json_bytes(status, json.dumps(body).encode(), close=close)

    async def _json_bytes(self, status: int, data: bytes, *, close: bool = False) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await self._send(h11.Response(status_code=status, headers=headers))
        await self._send(h11.Data(data=data))
        await self._send(h11.EndOfMessage())

    def _record(self) -> None:
        """Record the local names the forwarded request makes, once the engine said yes
        (its answer's head): before the client has the answer and may send its next
        request, on any connection, which may read them."""
        decision, run = self._records, self.socket.run_names
        if decision is None or not 200 <= self.status < 300 or (run.ended and run.scratch):
            return
        self.names.record(decision.records, self.socket.scope.stack)
        run.made.update(decision.records)

    async def _recorded_late(self) -> None:
        """The forwarded request's answer ended. Was it in flight when the run's socket
        closed, its clean-up has removed (or is removing) the names it knew of, and these
        would outlive the run: removed now. Not one another run has taken since: that
        run's now (its end removes it)."""
        decision, self._records = self._records, None
        run = self.socket.run_names
        if decision is None or not 200 <= self.status < 300 or not (run.ended and run.scratch):
            return
        free = [name for name in decision.records if self.leases.holder(name) is None]
        await _untag_all(self.engine_socket, self.names, free)

    async def _send(self, event: h11.Event) -> None:
        data = self.http.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()


async def _relay(
    client: tuple[asyncio.StreamReader, bytes],
    engine: tuple[asyncio.StreamReader, bytes],
    client_writer: asyncio.StreamWriter,
    engine_writer: asyncio.StreamWriter,
    relays: set[asyncio.StreamWriter],
    checked: _CheckedSession | None = None,
) -> None:
    """Bytes both ways (each read at most ``_READ_SIZE``, each write drained before the next
    read) until either side closes, through ``checked`` when given; then both are closed."""

    async def pump(
        reader: asyncio.StreamReader,
        early: bytes,
        writer: asyncio.StreamWriter,
        passing: Callable[[bytes], Awaitable[bytes]] | None,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            data = early or await reader.read(_READ_SIZE)
            while data:
                try:
                    data = await passing(data) if passing is not None else data
                except _SessionRefused as refused:
                    if refused.last:
                        writer.write(refused.last)
                        await writer.drain()
                        await asyncio.sleep(_REFUSED_GRACE)  # the engine reads it first
                    return
                if data:
                    writer.write(data)
                    await writer.drain()
                data = await reader.read(_READ_SIZE)

    relays.update((client_writer, engine_writer))
    from_client = checked.from_client if checked is not None else None
    from_engine = checked.from_engine if checked is not None else None
    pumps = [
        asyncio.create_task(pump(*client, engine_writer, from_client)),
        asyncio.create_task(pump(*engine, client_writer, from_engine)),
    ]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in pumps:
            task.cancel()
        for writer in (client_writer, engine_writer):
            relays.discard(writer)
            writer.close()
        await asyncio.gather(*pumps, return_exceptions=True)


class _SessionRefused(Exception):
    """The session ends here; ``last`` still goes on (the engine learns why)."""

    def __init__(self, last: bytes = b"") -> None:
        super().__init__()
        self.last = last


class _CheckedSession:
    """One BuildKit session read frame by frame both ways (see ``session``): the Dockerfile
    the CLI sends on its ``dockerfile`` stream is held back until the build's judge passed
    it; a refusal reaches the engine as the transfer's error, then the session ends."""

    def __init__(self, connection: _Connection, session: str) -> None:
        self.connection = connection
        self.session = session
        self.engine_frames = FrameSplitter(preface=True)
        self.client_frames = FrameSplitter()
        self.engine_headers = HeaderBlocks()
        self.client_headers = HeaderBlocks()
        self.watches: dict[int, DockerfileWatch] = {}
        self.held: list[Frame] = []

    async def from_engine(self, data: bytes) -> bytes:
        try:
            frames = self.engine_frames.feed(data)
            for frame in frames:
                size = settings_table_size(frame)
                if size is not None:
                    self.client_headers.limit(size)
                block = self.engine_headers.feed(frame)
                if block is not None:
                    self._opened(*block)
                self._engine_ends(frame)
        except SessionError as exc:
            raise self._refused(f"the engine's side of the session: {exc}") from exc
        return b"".join(frame.raw for frame in frames)

    def _engine_ends(self, frame: Frame) -> None:
        """The engine resets a held Dockerfile's stream or goes away: the CLI sends no
        more of it, so the hold would never end. The session ends (the held bytes dropped,
        never relayed unjudged)."""
        holding = self._holding()
        if holding is None:
            return
        if frame.kind == RST_STREAM and frame.stream == holding.stream:
            raise SessionError("it reset the Dockerfile's stream while the proxy checked it")
        if frame.kind == GOAWAY:
            raise SessionError("it went away while the proxy checked the Dockerfile")

    def _holding(self) -> DockerfileWatch | None:
        return next((w for w in self.watches.values() if w.holding), None)

    def _opened(self, stream: int, headers: dict[str, str]) -> None:
        call = file_sync_call(stream, headers)
        if call is None or call.dir_name != DOCKERFILE_DIR:
            return
        if call.method != DIFF_COPY:
            raise SessionError(f"the Dockerfile is asked for with {call.method}, which the "
                               "proxy does not read; use Docker's own CLI")  # fmt: skip
        build = self.connection.socket.session_builds.get(self.session)
        if build is None:
            raise SessionError("the engine asks for a Dockerfile no build of this session sent")
        filename = (build.query.get("dockerfile") or [""])[0]
        self.watches[stream] = DockerfileWatch(stream, filename)

    async def from_client(self, data: bytes) -> bytes:
        passed: list[Frame] = []
        try:
            for frame in self.client_frames.feed(data):
                size = settings_table_size(frame)
                if size is not None:
                    self.engine_headers.limit(size)
                self.client_headers.feed(frame)
                await self._client_frame(frame, passed)
        except SessionError as exc:
            raise self._refused(f"the client's side of the session: {exc}") from exc
        return b"".join(frame.raw for frame in passed)

    async def _client_frame(self, frame: Frame, passed: list[Frame]) -> None:
        watch = self.watches.get(frame.stream)
        holding = self._holding()
        if frame.kind == GOAWAY and holding is not None:
            # The CLI goes away: what it still sends is not waited for; the engine learns why.
            raise self._refused("it went away while its Dockerfile was checked", holding, passed)
        verdict = watch.feed(frame) if watch is not None else Verdict()
        if watch is not None and verdict.problem:
            raise self._refused(f"its Dockerfile: {verdict.problem}", watch, passed)
        for path, content in verdict.judge:
            if watch is None:
                break
            refusal = await self.connection._session_dockerfile_refusal(
                self.connection.socket.session_builds[self.session], path, content
            )
            if refusal is not None:
                raise _SessionRefused(self._refusal(refusal.message, watch, passed))
        self.held.append(frame)  # behind what is held already, whatever its stream
        if not any(w.holding for w in self.watches.values()):
            passed.extend(self.held)
            self.held.clear()
        elif sum(len(f.raw) for f in self.held) > _MAX_HELD:
            raise SessionError("more than 16 MiB sent while its Dockerfile was being checked")

    def _refused(
        self, problem: str, watch: DockerfileWatch | None = None, passed: list[Frame] | None = None
    ) -> _SessionRefused:
        message = f"Stackyard's build proxy refused the BuildKit session: {problem}"
        return _SessionRefused(self._refusal(message, watch, passed))

    def _refusal(
        self, message: str, watch: DockerfileWatch | None, passed: list[Frame] | None
    ) -> bytes:
        """What still goes on to the engine: the frames passed so far, then fsutil's error
        on the Dockerfile's stream (the held frames are dropped)."""
        socket = self.connection.socket
        socket.refusals.append(message)
        log.info("build proxy of %s: %s", socket.scope.stack, message)
        if watch is None or passed is None:
            return b""
        self.held.clear()
        return b"".join(frame.raw for frame in passed) + error_frame(watch.stream, message)


def _engine_message(body: bytes) -> str:
    """The ``message`` of the engine's error answer (its body otherwise)."""
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    if isinstance(found, dict) and found.get("message"):
        return str(found["message"])
    return body.decode(errors="replace").strip()


def _on_build(image: dict[str, Any]) -> list[str]:
    """An image's ONBUILD triggers, from the engine's inspect."""
    config = image.get("Config") or {}
    triggers = config.get("OnBuild") if isinstance(config, dict) else None
    return [str(t) for t in triggers] if isinstance(triggers, list) else []


async def _pull_error(upstream: _Upstream) -> str | None:
    """The error of the engine's answer to a pull (its status, or an error line among its
    progress lines, which are read as they come and dropped), or None."""
    status, pending, error = 0, b"", None
    while True:
        event = await upstream.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data) and status != 200:
            pending = (pending + bytes(event.data))[:_SMALL_BODY]  # the engine's refusal
        elif isinstance(event, h11.Data):
            pending += bytes(event.data)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                error = _progress_error(line) or error
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if status != 200:
                return _engine_message(pending) or f"the engine answered {status}"
            return _progress_error(pending) or error


def _progress_error(line: bytes) -> str | None:
    """The error a line of a pull's or push's progress (JSON) reports, if any."""
    try:
        found = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    if isinstance(found, dict) and found.get("error"):
        return str(found["error"])
    return None


def _stack_key(stack: str, value: bytes) -> bytes:
    return hashlib.sha256(stack.encode() + b"\0" + value).hexdigest().encode()


def _request_event(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[(b"host", b"docker"), *headers])


def _forward_headers(headers: Any, decision: Forward) -> list[tuple[bytes, bytes]]:
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lower = bytes(name).lower()
        if lower in _HOP_BY_HOP:
            continue
        if lower == b"x-registry-auth" and not decision.keep_auth:
            continue
        if lower == b"x-registry-config":
            if decision.build:  # stripped of the platform's registries once, when decided
                value = decision.registry_config.encode("ascii")
            elif not decision.keep_auth:
                continue
        kept.append((lower, bytes(value)))
    if decision.auth is not None:
        kept = [(k, v) for k, v in kept if k not in _AUTH_HEADERS]
        kept.append((b"x-registry-auth", registry_auth_header(decision.auth).encode()))
    return kept


def _response_headers(response: h11.Response) -> list[tuple[bytes, bytes]]:
    return [
        (bytes(name), bytes(value))
        for name, value in response.headers
        if bytes(name).lower() not in _HOP_BY_HOP
    ]
