"""What the ``docker`` and ``swarm`` engines share: one lazily made Docker SDK client, and its
errors translated at the boundary (unreachable -> ComponentError, NotFound -> NotFoundError,
any other refusal -> EngineError), and log chunks cut into lines.

``DockerApiEngine`` is the base class of both (engines/docker.py, engines/swarm.py); the
SDK is imported only in these three modules.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.types import CancellableStream
from docker.utils.json_stream import json_stream

from stackyard import docker_sdk  # noqa: F401 - the SDK with its fix, before any client
from stackyard.engines.base import (
    CHANGE_TIMEOUT,
    LISTING_TIMEOUT,
    PING_TIMEOUT,
    PULL_SILENCE,
    Engine,
    EngineError,
    EngineUnreachable,
    TaskLog,
)
from stackyard.errors import ComponentError, NotFoundError, StackyardError

# What a call through the SDK raises when it did not work: the SDK's errors, requests' (an
# OSError), and urllib3's that a streamed answer's read lets through (a read timeout).
CALL_ERRORS = (docker.errors.DockerException, OSError, urllib3.exceptions.HTTPError)
# The SDK's (requests', urllib3's) wording of a failed connection, innermost cause last.
_REASONS = (
    re.compile(r"Failed to establish a new connection: (\[Errno \d+\] [^\"')]+)"),
    re.compile(r"(Read timed out\.? \(read timeout=[^)]*\))"),
    re.compile(r"(Read timed out\.?)"),  # a streamed answer's (a pull's): no bound given
    re.compile(r"(?:FileNotFound|ConnectionRefused|PermissionError)\w*\((\d+), '([^']*)'\)"),
)


def unreachable_reason(exc: Exception) -> str:
    """Why the SDK could not reach the engine, in a few words (``[Errno 111] Connection
    refused``), without its layers of wrapping; the whole text when it is worded otherwise."""
    text = str(exc)
    for pattern in _REASONS:
        found = pattern.search(text)
        if found is None:
            continue
        if len(found.groups()) == 2:
            return f"[Errno {found.group(1)}] {found.group(2)}"
        return found.group(1).strip()
    return text


class DockerApiEngine(Engine):
    """An engine that speaks the Docker Engine API at ``base_url`` (None: DOCKER_HOST, else
    the local socket). Subclasses name what refused (``_who``) and what to do when it does
    not answer (``_unreachable``)."""

    _who = "the Docker engine"

    def __init__(
        self,
        base_url: str | None,
        timeout: int,
        ping_timeout: int = PING_TIMEOUT,
        listing_timeout: int = LISTING_TIMEOUT,
        change_timeout: int = CHANGE_TIMEOUT,
        pull_silence: int = PULL_SILENCE,
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._ping_timeout = ping_timeout
        self._listing_timeout = listing_timeout
        self._change_timeout = change_timeout
        self._pull_silence = pull_silence
        # One client per timeout (seconds within which each of its reads answers), made
        # when first used: the long one, the listings', the changes'. A pull and the event
        # stream go on the long one's connections with a bound of their own per request.
        self._clients: dict[int, docker.DockerClient] = {}
        self._client_lock = threading.Lock()

    def close(self) -> None:
        with self._client_lock:
            for client in self._clients.values():
                client.close()
            self._clients = {}

    def _client_api(self, timeout: int) -> Any:
        with self._client_lock:
            client = self._clients.get(timeout)
            if client is None:
                client = self._clients[timeout] = self._new_client(timeout)
            return client.api

    def _api(self) -> Any:
        """The long timeout's client: a log that is followed (a task may say nothing for
        minutes), a swarm's event stream."""
        return self._client_api(self._timeout)

    def _listing_api(self) -> Any:
        """The client of listings (``list``, ``nodes``, ``node_use``, a swarm watch's poll):
        every call answers within ``listing_timeout`` seconds or raises, so a task watch's
        tick on an engine that stopped answering fails soon instead of holding its thread
        for the long timeout (made for pulls and stops)."""
        return self._client_api(self._listing_timeout)

    def _change_api(self) -> Any:
        """The client of changes made in one request (a create, a start, a remove): each
        answers within ``change_timeout`` seconds or raises, so a stage's start or stop on
        an engine that stopped answering fails soon, naming the call."""
        return self._client_api(self._change_timeout)

    @contextmanager
    def _quick(self) -> Iterator[Any]:
        """A client of its own, for one check, whose every call answers within the ping
        timeout, closed after. Not the shared client: it waits the long timeout, its first
        use asks the engine's version with it, and another thread may be making it."""
        client = self._new_client(self._ping_timeout)
        try:
            yield client.api
        finally:
            client.close()

    def _new_client(self, timeout: int) -> docker.DockerClient:
        """A client at ``base_url`` (it asks the engine's API version at once, within
        ``timeout``)."""
        try:
            if self._base_url:
                return docker.DockerClient(base_url=self._base_url, timeout=timeout)
            return docker.from_env(timeout=timeout)
        except (docker.errors.DockerException, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _call(
        self, method: Callable[..., Any], *args: Any, missing: str | None = None, **kwargs: Any
    ) -> Any:
        try:
            return method(*args, **kwargs)
        except docker.errors.NotFound as exc:
            if missing is None:
                raise self._refused(f"{self._who} refused", exc) from exc
            raise NotFoundError(f"{missing} does not exist (any more)") from exc
        except CALL_ERRORS as exc:
            raise self._refused(f"{self._who} refused", exc) from exc

    def _answers(self, call: str, method: Callable[..., Any], **kwargs: Any) -> None:
        """Ask once, with a ping's client, what a task watch's first listing asks (``call``
        names it): an engine that answers its ping and then never answers a listing is
        refused within the ping timeout, naming the call, instead of holding a deploy for
        the client's long timeout in the watch's first listing."""
        self._listed(f"{call}, after it answered its ping", method, **kwargs)

    def _listed(self, call: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method``'s answer; an engine that did not answer (ComponentError) is said to
        have not answered ``call`` (``GET /tasks``): a watch's log line names it."""
        try:
            return self._call(method, *args, **kwargs)
        except ComponentError as exc:
            raise _in(call, exc) from exc

    def _refused_in(self, call: str, what: str, exc: Exception) -> StackyardError:
        """``_refused``, and an engine that did not answer said to have not answered
        ``call`` (``POST /containers/…/stop``)."""
        error = self._refused(what, exc)
        return _in(call, error) if isinstance(error, ComponentError) else error

    def _event_stream(
        self, filters: Mapping[str, list[str]], since: str, until: int, window: float
    ) -> CancellableStream:
        """``GET /events`` from ``since`` to ``until`` (the engine ends the stream then), its
        messages decoded. The SDK's own waits for ever (no timeout), and a task watch opens
        it on a deploy's way (the target's first follow): here the engine answers within a
        listing's timeout (it answers at once, before any event), or the call fails naming
        it; then each read within the window and a listing's timeout (the stream is quiet
        while nothing happens), so a stream the engine stops feeding ends (the watch lists
        again)."""
        api = self._api()
        params = {"since": since, "until": until, "filters": json.dumps(dict(filters))}
        try:
            response = _streamed(api, "/events", params, self._listing_timeout)
        except CALL_ERRORS as exc:
            raise self._refused_in("GET /events", f"{self._who} refused its events", exc) from exc
        _reads_within(response, max(1.0, window) + self._listing_timeout)
        return CancellableStream(json_stream(response.iter_content(chunk_size=None)), response)

    def _log(self, task_id: str, *, tail: int | None, follow: bool) -> TaskLog:
        """``GET <logs path>`` (a container's or a service's), its lines. The engine's first
        answer (its headers) within a change's timeout, followed or not: a target that hangs
        fails the call soon, naming it. Then each read without a timeout: a followed log may
        say nothing for as long as its task does. ``close`` from any thread ends it and
        lets go of the connection (the API's follower went away)."""
        path = self._logs_path(task_id)
        params = {
            "stdout": 1,
            "stderr": 1,
            "follow": int(follow),
            "tail": "all" if tail is None else tail,
        }
        response = self._listed(
            f"GET {path}",
            _streamed,
            self._change_api(),
            path,
            params,
            self._change_timeout,
            missing=f"task {task_id}",
        )
        _reads_within(response, None)
        closed = threading.Event()

        def close() -> None:
            closed.set()
            with suppress(OSError):  # the reader may be closing it at the same moment
                CancellableStream(iter(()), response).close()  # shuts the socket: reads end

        return TaskLog(self._lines(_frames(response), task_id, closed), close)

    def _lines(
        self, chunks: Iterator[bytes], task_id: str, closed: threading.Event
    ) -> Iterator[str]:
        pending = b""
        try:
            for chunk in chunks:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", errors="replace").rstrip("\r")
        except (*CALL_ERRORS, ValueError) as exc:  # ValueError: a read of a closed file
            if closed.is_set():
                return
            what = f"cannot read the logs of task {task_id}"
            raise self._refused_in(f"GET {self._logs_path(task_id)}", what, exc) from exc
        if pending:
            yield pending.decode("utf-8", errors="replace").rstrip("\r")

    def _logs_path(self, task_id: str) -> str:
        return f"/containers/{task_id[:12]}/logs"

    def _refused(self, what: str, exc: Exception) -> StackyardError:
        if isinstance(exc, docker.errors.APIError):
            return self._explained(what, str(exc.explanation or exc))
        if isinstance(exc, StackyardError):
            return exc
        return self._unreachable(exc)

    def _explained(self, what: str, explanation: str) -> StackyardError:
        """The error for a refusal the engine explained."""
        return EngineError(f"{what}: {explanation}")

    def _unreachable(self, exc: Exception) -> EngineUnreachable:
        raise NotImplementedError


def _streamed(api: Any, path: str, params: Mapping[str, Any], timeout: float) -> Any:
    """``GET path`` of the engine as a stream, its headers read within ``timeout``; an error
    answer raised as the SDK's APIError."""
    response = api.get(engine_url(api, path), params=params, stream=True, timeout=timeout)
    raise_for_status(response)
    return response


def _frames(response: Any) -> Iterator[bytes]:
    """The payloads of a log's multiplexed stream (Docker's framing for a task without a
    TTY, which ours never have: per frame, the stream's number, three zero bytes and the
    payload's length, big-endian). The answer is closed when the reader stops."""
    raw = response.raw
    try:
        while len(header := raw.read(8)) == 8:
            size = int.from_bytes(header[4:], "big")
            if size and (payload := raw.read(size)):
                yield payload
    finally:
        response.close()


def _reads_within(response: Any, seconds: float | None) -> None:
    """The rest of a streamed answer (its headers read) read with ``seconds`` per read (None:
    no bound): requests has one read timeout for the headers and the body, set on the
    socket, which urllib3 exposes as the response's connection's. Left as it is when there
    is none."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def raise_for_status(response: Any) -> None:
    """An error answer of the engine to a request of our own (not through an SDK call) as
    the SDK's calls raise it: its APIError (NotFound for a 404), the engine's message as the
    explanation."""
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        docker.errors.create_api_error_from_http_exception(exc)  # raises its APIError


def engine_url(api: Any, path: str) -> str:
    """The engine's URL of ``path`` (``/events``), at the API version the client speaks."""
    return f"{api.base_url}/v{api.api_version}{path}"


def _in(call: str, exc: ComponentError) -> ComponentError:
    """``exc`` saying the engine did not answer ``call`` (an EngineUnreachable still is one,
    at its endpoint)."""
    said = f"{exc.message} (in {call})"
    if isinstance(exc, EngineUnreachable):
        return EngineUnreachable(
            said, endpoint=exc.endpoint, hint=exc.hint, retryable=exc.retryable
        )
    return ComponentError(said, hint=exc.hint, retryable=exc.retryable)
