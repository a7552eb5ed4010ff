"""What the ``docker`` and ``swarm`` engines share: one lazily made Docker SDK client, and its
errors translated at the boundary (unreachable -> ComponentError, NotFound -> NotFoundError,
any other refusal -> EngineError), and log chunks cut into lines.

``DockerApiEngine`` is the base class of both (engines/docker.py, engines/swarm.py); the
SDK is imported only in these three modules.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors

from stackyard.engines.base import LISTING_TIMEOUT, PING_TIMEOUT, Engine, EngineError
from stackyard.errors import ComponentError, NotFoundError, StackyardError

# The SDK's (requests', urllib3's) wording of a failed connection, innermost cause last.
_REASONS = (
    re.compile(r"Failed to establish a new connection: (\[Errno \d+\] [^\"')]+)"),
    re.compile(r"(Read timed out\.? \(read timeout=[^)]*\))"),
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
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._ping_timeout = ping_timeout
        self._listing_timeout = listing_timeout
        self._client: docker.DockerClient | None = None
        self._lister: docker.DockerClient | None = None  # the listings' (listing_timeout)
        self._client_lock = threading.Lock()

    def close(self) -> None:
        with self._client_lock:
            for client in (self._client, self._lister):
                if client is not None:
                    client.close()
            self._client = self._lister = None

    def _api(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client(self._timeout)
            return self._client.api

    def _listing_api(self) -> Any:
        """The client of listings (``list``, ``nodes``, ``node_use``, a swarm watch's poll):
        every call answers within ``listing_timeout`` seconds or raises, so a task watch's
        tick on an engine that stopped answering fails soon instead of holding its thread
        for the long timeout (made for pulls and stops)."""
        with self._client_lock:
            if self._lister is None:
                self._lister = self._new_client(self._listing_timeout)
            return self._lister.api

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
        except (docker.errors.DockerException, OSError) as exc:
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

    def _lines(self, chunks: Iterator[bytes], task_id: str) -> Iterator[str]:
        pending = b""
        try:
            for chunk in chunks:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", errors="replace").rstrip("\r")
        except (docker.errors.DockerException, OSError) as exc:
            raise self._refused(f"cannot read the logs of task {task_id}", exc) from exc
        if pending:
            yield pending.decode("utf-8", errors="replace").rstrip("\r")

    def _refused(self, what: str, exc: Exception) -> StackyardError:
        if isinstance(exc, docker.errors.APIError):
            return self._explained(what, str(exc.explanation or exc))
        if isinstance(exc, StackyardError):
            return exc
        return self._unreachable(exc)

    def _explained(self, what: str, explanation: str) -> StackyardError:
        """The error for a refusal the engine explained."""
        return EngineError(f"{what}: {explanation}")

    def _unreachable(self, exc: Exception) -> ComponentError:
        raise NotImplementedError


def _in(call: str, exc: ComponentError) -> ComponentError:
    """``exc`` saying the engine did not answer ``call``."""
    return ComponentError(f"{exc.message} (in {call})", hint=exc.hint, retryable=exc.retryable)
