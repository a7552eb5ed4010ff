"""The CLI's HTTP client for the API: finds the URL and the token by itself.

The URL: ``STACKYARD_URL``, else the running platform's state file in the data directory.
The token: ``STACKYARD_TOKEN``, else the one ``stackyard login`` stored for that URL, else
the data directory's bootstrap admin token file.

It speaks HTTP/1.1 through the standard library's ``http.client``, over one kept-alive
connection per command. A command is a short process, so its start-up counts: importing
httpx (with the rich and click of its own CLI) costs about as much as everything else a
command does before its first request (docs/decisions.md, "The CLI's HTTP client").
"""

from __future__ import annotations

import json
import os
import select
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stackyard import __version__
from stackyard.errors import (
    AccessDenied,
    ComponentError,
    NotFoundError,
    OperationFailed,
    RetryableError,
    StackyardError,
    UsageError,
)
from stackyard.settings import Settings

if TYPE_CHECKING:
    import http.client

Params = Mapping[str, str | int | bool | None]
_DEFAULT: Any = object()  # "the client's own timeout", as opposed to None (wait forever)
_IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE")


@dataclass
class ApiClient:
    base_url: str
    token: str
    timeout: float = 30.0
    _connection: http.client.HTTPConnection | None = field(default=None, init=False, repr=False)

    @classmethod
    def discover(cls, settings: Settings) -> ApiClient:
        url = api_url(settings)
        token = os.environ.get("STACKYARD_TOKEN")
        if not token:
            from stackyard.cli.credentials import stored_token

            token = stored_token(url)
        if not token:
            from stackyard.platform.credentials import read_token

            token = read_token(settings.token_file)
        return cls(url, token)

    # -- requests

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        timeout: float | None = _DEFAULT,
    ) -> Any:
        """Send one request; the decoded JSON answer (None for an empty body)."""
        body = None if json is None else _json_bytes(json)
        data = self._answer(method, path, params, body, timeout)
        return _json_loads(data) if data else None

    def get(self, path: str, *, params: Params | None = None) -> Any:
        return self.request("GET", path, params=params)

    def text(self, path: str, *, params: Params | None = None) -> str:
        """GET a plain-text resource (a log)."""
        return self._answer("GET", path, params, None, _DEFAULT).decode("utf-8", "replace")

    def events(self, path: str, *, params: Params | None = None) -> Iterator[tuple[str, str]]:
        """The ``(event, data)`` pairs of a server-sent event stream, until it ends.

        No read timeout: a quiet log may take long to grow (the server sends keep-alives).
        """
        import http.client  # here, not at the top: `--version`, `--help` and TAB ask no API

        connection = self._open(self.timeout)
        try:
            response = self._send(connection, "GET", path, params, None, "text/event-stream")
            if response.status >= 400:
                raise _error_from(response.status, response.reason, response.read())
            if connection.sock is not None:
                connection.sock.settimeout(None)
            event = "message"
            while raw := response.readline():
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    yield event, line[6:]
                elif not line:
                    event = "message"
        except (OSError, http.client.HTTPException) as exc:
            raise ComponentError(f"the stream from {self.base_url} broke: {exc}") from exc
        finally:
            self.close()  # a stream is not read to its end by every caller: never reuse it

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- plumbing

    def _answer(
        self,
        method: str,
        path: str,
        params: Params | None,
        body: bytes | None,
        timeout: float | None,
    ) -> bytes:
        """The body of a successful answer; an error answer raises its Stackyard error."""
        status, reason, data = self._exchange(method, path, params, body, timeout)
        if status >= 400:
            raise _error_from(status, reason, data)
        return data

    def _exchange(
        self,
        method: str,
        path: str,
        params: Params | None,
        body: bytes | None,
        timeout: float | None,
    ) -> tuple[int, str, bytes]:
        import http.client

        timeout = self.timeout if timeout is _DEFAULT else timeout
        for attempt in (1, 2):
            connection = self._open(timeout)
            reused = connection.sock is not None
            try:
                response = self._send(connection, method, path, params, body, "application/json")
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                # The server closed the kept-alive connection just as we reused it.
                if reused and attempt == 1 and method in _IDEMPOTENT:
                    continue
                raise self._unreachable(exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc) from exc
            if response.will_close:
                self.close()
            return response.status, response.reason, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, timeout: float | None) -> http.client.HTTPConnection:
        import http.client

        connection = self._connection
        if connection is not None and connection.sock is not None:
            if _dropped(connection.sock):
                self.close()
                connection = None
            else:
                connection.sock.settimeout(timeout)
        if connection is None:
            parts = urllib.parse.urlsplit(self.base_url)
            if parts.scheme == "https":
                import ssl

                connection = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=timeout,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            elif parts.scheme == "http":
                connection = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=timeout
                )
            else:
                raise UsageError(
                    f"the API URL {self.base_url} is not http:// or https://",
                    hint="check STACKYARD_URL",
                )
            self._connection = connection
        return connection

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        params: Params | None,
        body: bytes | None,
        accept: str,
    ) -> http.client.HTTPResponse:
        target = urllib.parse.urlsplit(self.base_url).path.rstrip("/") + path
        query = _query(params)
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": accept,
            "User-Agent": f"stackyard-cli/{__version__}",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(
            method, f"{target}?{query}" if query else target, body=body, headers=headers
        )
        return connection.getresponse()

    def _unreachable(self, exc: Exception) -> ComponentError:
        return ComponentError(
            f"the API at {self.base_url} did not answer: {exc or type(exc).__name__}",
            hint="is the platform running? try `stackyard up -d`",
        )


def api_url(settings: Settings) -> str:
    """``STACKYARD_URL``, else the URL of the platform running for the data directory."""
    url = os.environ.get("STACKYARD_URL")
    if url is None:
        from stackyard.platform.state import running_state

        state = running_state(settings.state_file)
        if state is None:
            raise ComponentError(
                f"no Stackyard is running for {settings.data_dir}",
                hint="start it with `stackyard up -d`, or set STACKYARD_URL",
            )
        url = state.api_url
    return url.rstrip("/")


def _dropped(sock: Any) -> bool:
    """A kept-alive socket the server has closed reads as ready (EOF) before we send."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _query(params: Params | None) -> str:
    if not params:
        return ""
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        pairs.append((key, text))
    return urllib.parse.urlencode(pairs)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, default=str).encode("utf-8")


def _json_loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise StackyardError(f"the API sent something that is not JSON: {data[:200]!r}") from exc


def _error_from(status: int, reason: str, data: bytes) -> StackyardError:
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        body = {"error": data.decode("utf-8", "replace").strip()}
    message = body.get("error") or body.get("detail") or reason
    hint = body.get("hint")
    if status == 401:
        return UsageError(
            f"the API refused the token: {message}",
            hint="log in with `stackyard login` (or set STACKYARD_TOKEN)",
        )
    if status == 403:
        return AccessDenied(str(message), permission=str(body.get("permission") or ""), hint=hint)
    if status == 429:
        return RetryableError(str(message), hint="wait, then try again with the right token")
    if status == 404:
        return NotFoundError(str(message), hint=hint)
    if status == 409:
        return OperationFailed(str(message), hint=hint)
    if 400 <= status < 500:
        return UsageError(str(message), hint=hint)
    return StackyardError(f"the API failed ({status}): {message}", hint=hint)
