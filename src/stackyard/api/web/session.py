"""Console sessions and CSRF tokens: signed cookies, checked by every console route.

A session cookie holds ``v1.<expires>.<nonce>.<mac>``: a random nonce and an expiry,
signed with HMAC-SHA256 under a key made at each start of the API server. The admin token
itself never goes into the cookie. A form's CSRF token is the HMAC of the nonce, so it
belongs to one session and needs no storage. ``install`` puts one ``ConsoleSessions`` on
the app; ``api/auth.py`` asks it whether a GET request's cookie is valid.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from fastapi import HTTPException, Request, status
from starlette.responses import Response

COOKIE = "stackyard_session"
CSRF_FIELD = "csrf_token"
LIFETIME = 12 * 3600
MAX_FORM_BYTES = 64 * 1024
# Wrong admin tokens from one client: after LOGIN_FAILURES within LOGIN_WINDOW seconds,
# its logins are refused until the window has passed (the token is 256 random bits; this
# only keeps guessing slow and loud).
LOGIN_FAILURES = 5
LOGIN_WINDOW = 60.0


@dataclass(frozen=True)
class ConsoleSession:
    """A valid session: its nonce (what logout revokes) and the CSRF token of its forms."""

    nonce: str
    expires: int
    csrf_token: str


class ConsoleSessions:
    """Issue, verify and revoke session cookies; the key lives only in this process."""

    def __init__(self, token: str, *, key: bytes | None = None, lifetime: int = LIFETIME) -> None:
        self._token = token
        self._key = key or secrets.token_bytes(32)
        self._lifetime = lifetime
        self._revoked: dict[str, int] = {}
        self._failures: dict[str, list[float]] = {}  # client -> times of wrong tokens
        self._lock = threading.Lock()

    def token_matches(self, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self._token.encode())

    def login_wait(self, client: str, now: float | None = None) -> float:
        """Seconds before ``client`` may try a token again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            if len(recent) < LOGIN_FAILURES:
                return 0.0
            return LOGIN_WINDOW - (now - recent[-LOGIN_FAILURES])

    def login_failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failures.setdefault(client, []).append(now)
            if len(self._failures) > 10_000:  # many clients: forget the oldest
                self._failures.pop(next(iter(self._failures)))

    def login_succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def issue(self) -> str:
        expires = int(time.time()) + self._lifetime
        body = f"v1.{expires}.{secrets.token_urlsafe(24)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, cookie: str | None) -> ConsoleSession | None:
        """The session of a cookie value, or None when it is missing, forged, expired or
        logged out."""
        if not cookie or cookie.count(".") != 3:
            return None
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        _, expires_text, nonce = body.split(".")
        expires = int(expires_text) if expires_text.isdigit() else 0
        if expires < time.time():
            return None
        with self._lock:
            if nonce in self._revoked:
                return None
        return ConsoleSession(nonce=nonce, expires=expires, csrf_token=self._mac(f"csrf.{nonce}"))

    def revoke(self, session: ConsoleSession) -> None:
        now = time.time()
        with self._lock:
            self._revoked = {n: e for n, e in self._revoked.items() if e >= now}
            self._revoked[session.nonce] = session.expires

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def sessions_of(request: Request) -> ConsoleSessions | None:
    found: ConsoleSessions | None = getattr(request.app.state, "console_sessions", None)
    return found


def current_session(request: Request) -> ConsoleSession | None:
    sessions = sessions_of(request)
    return sessions.verify(request.cookies.get(COOKIE)) if sessions else None


def login_location(request: Request) -> str:
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/ui/login?next=" + quote(wanted, safe="")


def page_session(request: Request) -> ConsoleSession:
    """Dependency of console pages and forms: without a session, off to the login page."""
    found = current_session(request)
    if found is None:
        location = login_location(request) if request.method == "GET" else "/ui/login"
        raise HTTPException(
            status_code=status.HTTP_303_SEE_OTHER,
            detail="log in to the console first",
            headers={"Location": location},
        )
    return found


def fragment_session(request: Request) -> ConsoleSession:
    """Dependency of the fragments the pages poll: 401 without a session (no redirect)."""
    found = current_session(request)
    if found is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="no console session: log in at /ui/login",
        )
    return found


def safe_next(target: str | None) -> str:
    """Where to go after login: a console path only, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


async def read_form(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (the console's forms)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="console forms are sent as application/x-www-form-urlencoded",
        )
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"form too large (limit {MAX_FORM_BYTES // 1024} KiB)",
        )
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def checked_form(request: Request) -> dict[str, str]:
    """Dependency of every console POST: a session, then a form with its CSRF token."""
    session = page_session(request)
    form = await read_form(request)
    given = form.pop(CSRF_FIELD, "")
    if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="the form's CSRF token is missing or wrong: reload the page and try again",
        )
    return form


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=LIFETIME,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
