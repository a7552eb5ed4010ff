"""HTTP to one registry endpoint: auth challenges, retries with backoff, and error mapping.

The registry client (registry.py) and the blob transfer (registry_blobs.py) send every
request through ``RegistryTransport``; it turns HTTP statuses into Stackyard errors.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urljoin

import httpx

from stackyard.errors import (
    PermanentError,
    RetryableError,
    StackyardError,
    UsageError,
)
from stackyard.images.reference import is_host
from stackyard.images.registry_auth import RegistryAuth, TokenRefused
from stackyard.images.registry_base import not_found

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 30.0
READ_ONLY_WAIT = 120.0  # seconds a write waits out a registry that is read-only
# Seconds a check (one HEAD, its 401 challenge and token fetch included) waits for each
# answer: a registry that accepts and never answers fails a deploy's image check soon,
# naming the registry, instead of costing the 30 s read timeout made for blob transfers.
# Same as the engines' PING_TIMEOUT and LISTING_TIMEOUT.
CHECK_TIMEOUT = 10.0
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

T = TypeVar("T")


def default_scheme(endpoint: str) -> str:
    """http for loopback registries (as Docker trusts them), https for everything else."""
    host = endpoint.rsplit("]", 1)[0].lstrip("[") if endpoint.startswith("[") else endpoint
    host = host.split(":")[0] if not endpoint.startswith("[") else host
    if host == "localhost":
        return "http"
    try:
        return "http" if ipaddress.ip_address(host).is_loopback else "https"
    except ValueError:
        return "https"


def describe(exc: httpx.HTTPError) -> str:
    """A transport failure in a few words: refused, cannot connect, timed out."""
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        return "connection refused" if "refused" in text else f"cannot connect ({exc})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def _error_messages(response: httpx.Response) -> str:
    """The registry's own error text: ``errors[].code: message``, else the body's start."""
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return "; ".join(
            f"{e.get('code', '?')}: {e.get('message', '')}".strip(": ")
            for e in body["errors"]
            if isinstance(e, dict)
        )
    try:
        return response.text[:200].strip()
    except httpx.ResponseNotRead:
        return ""


def _status_text(response: httpx.Response) -> str:
    """``HTTP 500 (UNKNOWN: ...)``, the registry's message only when it sent one."""
    messages = _error_messages(response)
    return f"HTTP {response.status_code}" + (f" ({messages})" if messages else "")


class RegistryReadOnlyError(RetryableError):
    """The registry serves pulls only for now (maintenance such as garbage collection)."""


def read_only_refusal(method: str, response: httpx.Response) -> bool:
    """A write refused because the registry is read-only: CNCF distribution's maintenance
    mode answers 405 with ``Allow: GET, HEAD`` and no error document. A registry that
    forbids deletes for good answers 405 with an ``UNSUPPORTED`` error instead."""
    if method not in WRITES or response.status_code != 405:
        return False
    allowed = {m.strip().upper() for m in response.headers.get("Allow", "").split(",")}
    return bool(allowed - {""}) and allowed <= {"GET", "HEAD"}


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class RegistryTransport:
    """Requests to one registry endpoint, e.g. ``127.0.0.1:5000`` or ``ghcr.io``.

    Retryable failures (refused, timeouts, 5xx, 429) are tried ``retries`` times in all
    with exponential backoff from ``backoff`` seconds, then raised as RetryableError;
    401/403/404/other 4xx are not retryable and raise at once.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        username: str | None = None,
        password: str | None = None,
        scheme: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 30.0,
        check_timeout: float = CHECK_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        read_only_wait: float = READ_ONLY_WAIT,
        credentials_hint: str = "check the registry username and password",
    ) -> None:
        if "://" in endpoint:
            given, _, endpoint = endpoint.partition("://")
            scheme = scheme or given
        endpoint = endpoint.rstrip("/")
        if endpoint == "docker.io":
            endpoint = "registry-1.docker.io"
        if not endpoint or not is_host(endpoint):
            raise UsageError(f"bad registry endpoint {endpoint!r}: expected host[:port]")
        scheme = scheme or default_scheme(endpoint)
        if scheme not in ("http", "https"):
            raise UsageError(f"bad registry scheme {scheme!r}: use http or https")
        if retries < 1:
            raise UsageError(f"retries must be at least 1, not {retries}")
        self.endpoint = endpoint
        self.scheme = scheme
        self.credentials_hint = credentials_hint  # what to do when the credentials fail
        self.base_url = f"{scheme}://{endpoint}"
        self.retries = retries
        self.backoff = backoff
        self.read_only_wait = read_only_wait
        self.check_timeout = httpx.Timeout(check_timeout, connect=min(check_timeout, 5.0))
        try:
            self.auth = RegistryAuth(username, password)
        except ValueError as exc:
            raise UsageError(f"registry {endpoint}: {exc}") from exc
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            follow_redirects=True,  # blob GETs redirect to object storage on ECR, GHCR, Hub
            headers={"User-Agent": "stackyard"},
        )

    def close(self) -> None:
        self.http.close()

    def url(self, location: str) -> str:
        """An absolute URL for a path or a ``Location`` header the registry sent."""
        return urljoin(self.base_url + "/", location)

    def paged(
        self,
        path: str,
        key: str,
        *,
        operation: str,
        scopes: tuple[str, ...],
        page_size: int | None,
        missing: str,
    ) -> list[str]:
        """Every item of a listing, following the ``Link: rel="next"`` pages."""
        items: list[str] = []
        url: str | None = path
        params = {"n": str(page_size)} if page_size else None
        while url is not None:
            response = self.request(
                "GET", url, operation=operation, scopes=scopes, params=params, missing=missing
            )
            params = None  # the next link carries its own query
            items += response.json().get(key) or []
            next_url = response.links.get("next", {}).get("url")
            url = self.url(next_url) if next_url else None
        return items

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        missing: str | None = None,
        allow: frozenset[int] | set[int] = frozenset(),
        attempts: int | None = None,
        check: bool = False,
    ) -> httpx.Response:
        """Send with auth and retries (``attempts`` in all; None: the transport's
        ``retries``); return a 2xx (or allowed) response, else raise. ``check``: each answer
        within ``check_timeout`` (a check's one HEAD), not the client's long timeout."""
        response = self.retrying(
            operation,
            lambda: self.send_once(
                method,
                path,
                scopes=scopes,
                headers=headers,
                params=params,
                content=content,
                check=check,
            ),
            attempts=attempts,
        )
        if response.status_code in allow:
            return response
        self.check(response, operation, missing=missing)
        return response

    def retrying(
        self, operation: str, attempt: Callable[[], T], *, attempts: int | None = None
    ) -> T:
        """Run ``attempt`` up to ``retries`` (or ``attempts``) times while it fails with a
        retryable error.

        An error that is not retryable (401, 404, a rejected request) is raised at once. A
        write the registry refuses as read-only is tried again every ``backoff`` seconds
        (at most 1 s) for up to ``read_only_wait`` seconds, without counting as an attempt.
        """
        last: StackyardError | None = None
        number = 1
        tries = self.retries if attempts is None else attempts
        read_only_until = time.monotonic() + self.read_only_wait
        while number <= tries:
            try:
                return attempt()
            except RegistryReadOnlyError as exc:
                last = exc
                if time.monotonic() < read_only_until:
                    time.sleep(min(self.backoff, 1.0))
                    continue
            except StackyardError as exc:
                if not exc.retryable:
                    raise
                last = exc
            if number < tries:
                time.sleep(min(self.backoff * 2 ** (number - 1), MAX_BACKOFF))
            number += 1
        reason = last.message if last else "no attempt made"
        after = "at its one attempt" if tries == 1 else f"after {tries} attempts"
        raise RetryableError(
            f"registry {self.endpoint} did not answer to {operation} {after}: {reason}",
            hint=f"is the registry at {self.base_url} running and reachable?",
        ) from (last.__cause__ if last else None)

    def send_once(
        self,
        method: str,
        path: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        check: bool = False,
    ) -> httpx.Response:
        """One request plus, on a 401 challenge, one authenticated retry (``check``: each
        of them, the token fetch too, within ``check_timeout``)."""
        url = path if "://" in path else self.base_url + path
        base_headers = dict(headers or {})
        timeout = self.check_timeout if check else self.http.timeout

        def send(extra: dict[str, str]) -> httpx.Response:
            try:
                response = self.http.request(
                    method,
                    url,
                    headers={**base_headers, **extra},
                    params=params,
                    content=content,
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                raise RetryableError(describe(exc)) from exc
            if response.status_code in RETRY_STATUSES:
                raise RetryableError(_status_text(response))
            if read_only_refusal(method, response):
                raise RegistryReadOnlyError(f"HTTP 405: the registry is read-only ({method})")
            return response

        sent = self.auth.headers(scopes)
        response = send(sent)
        challenge = response.headers.get("WWW-Authenticate")
        if response.status_code != 401 or not challenge:
            return response
        try:
            retry_headers = self.auth.answer(
                challenge,
                scopes,
                lambda realm, query, extra: self._fetch_token(realm, query, extra, timeout),
                sent=sent,
            )
        except TokenRefused as refused:
            return refused.response
        return response if retry_headers is None else send(retry_headers)

    def _fetch_token(
        self,
        realm: str,
        params: list[tuple[str, str]],
        headers: dict[str, str],
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        try:
            response = self.http.get(
                realm, params=tuple(params), headers=headers, timeout=timeout or self.http.timeout
            )
        except httpx.TransportError as exc:
            raise RetryableError(f"token service {realm}: {describe(exc)}") from exc
        if response.status_code in RETRY_STATUSES:
            raise RetryableError(f"token service {realm} answered HTTP {response.status_code}")
        return response

    def check(
        self, response: httpx.Response, operation: str, *, missing: str | None = None
    ) -> None:
        """Raise the Stackyard error for a 4xx answer; do nothing for a success."""
        status = response.status_code
        if status < 400:
            return
        where = f"registry {self.endpoint}"
        if status == 401:
            if self.auth.has_credentials:
                raise PermanentError(
                    f"{where} refused the credentials of user {self.auth.username!r} "
                    f"to {operation} (HTTP {status})",
                    hint=self.credentials_hint,
                )
            raise PermanentError(
                f"{where} requires credentials to {operation}",
                hint="give the registry username and password",
            )
        if status == 404:
            raise not_found(missing or operation, self.endpoint)
        if status == 403:
            raise PermanentError(
                f"{where} denied access to {operation}: {_status_text(response)}",
                hint="the credentials lack permission for this repository",
            )
        raise PermanentError(f"{where} rejected {operation}: {_status_text(response)}")
