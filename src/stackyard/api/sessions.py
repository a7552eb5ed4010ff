"""Console sessions and CSRF tokens: signed cookies, checked by every console route.

A session cookie holds ``v2.<expires>.<nonce>.<token id>.<mac>``: a random nonce, an
expiry and the public id of the token the person logged in with, signed with HMAC-SHA256
under a key made at each start of the API server. The token itself never goes into the
cookie; ``api/auth.py`` reads the token's row on every request, so revoking the token (or
removing its owner) ends the session at once. A form's CSRF token is the HMAC of the
nonce, so it belongs to one session and needs no storage. ``install`` puts one
``ConsoleSessions`` on the app.
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


@dataclass(frozen=True)
class ConsoleSession:
    """A valid session: its nonce (what logout revokes) and the CSRF token of its forms."""

    nonce: str
    expires: int
    token_id: str
    csrf_token: str


class ConsoleSessions:
    """Issue, verify and revoke session cookies; the key lives only in this process."""

    def __init__(self, *, key: bytes | None = None, lifetime: int = LIFETIME) -> None:
        self._key = key or secrets.token_bytes(32)
        self._lifetime = lifetime
        self._revoked: dict[str, int] = {}
        self._lock = threading.Lock()

    def issue(self, token_id: str) -> str:
        """A cookie for a session opened with the token ``token_id``."""
        expires = int(time.time()) + self._lifetime
        body = f"v2.{expires}.{secrets.token_urlsafe(24)}.{token_id}"
        return f"{body}.{self._mac(body)}"

    def verify(self, cookie: str | None) -> ConsoleSession | None:
        """The session of a cookie value, or None when it is missing, forged, expired or
        logged out. (Whether its token is still valid is for the caller to ask.)"""
        if not cookie or cookie.count(".") != 4:
            return None
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        _, expires_text, nonce, token_id = body.split(".")
        expires = int(expires_text) if expires_text.isdigit() else 0
        if expires < time.time():
            return None
        with self._lock:
            if nonce in self._revoked:
                return None
        return ConsoleSession(
            nonce=nonce,
            expires=expires,
            token_id=token_id,
            csrf_token=self._mac(f"csrf.{nonce}"),
        )

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
