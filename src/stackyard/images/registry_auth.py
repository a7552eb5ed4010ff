"""Authentication for the registry client: HTTP basic and the bearer token flow.

``RegistryTransport`` (registry_transport.py) asks ``RegistryAuth`` for headers before a request and
hands it each 401 challenge; the token flow is the one Docker Hub, GHCR and ECR use.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

# key="value" or key=token pairs of a WWW-Authenticate challenge.
_PARAM = re.compile(r'\s*([A-Za-z][\w.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` header: its scheme (lower case) and parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="https://auth",service="reg",scope="repository:a:pull"`` → a Challenge."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        match.group(1).lower(): (
            match.group(3) if match.group(2) is None else re.sub(r"\\(.)", r"\1", match.group(2))
        )
        for match in _PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


@dataclass(frozen=True)
class CachedToken:
    token: str
    expires_at: float


class TokenRefused(Exception):
    """The token realm answered with an error status; the client names the registry."""

    def __init__(self, realm: str, response: httpx.Response) -> None:
        super().__init__(f"token service {realm} answered HTTP {response.status_code}")
        self.realm = realm
        self.response = response


class RegistryAuth:
    """Credentials plus what the registry asked for so far; caches bearer tokens per scope.

    ``fetch`` sends the token request; the client passes its own sender so the token
    call shares its transport, timeouts and error handling.
    """

    def __init__(self, username: str | None, password: str | None) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username = username
        self.password = password
        self.scheme: str | None = None  # "basic" or "bearer", learnt from the first challenge
        self._tokens: dict[tuple[str, ...], CachedToken] = {}
        self.token_requests = 0

    @property
    def has_credentials(self) -> bool:
        return self.username is not None

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header to send before any challenge, if one is known to work."""
        if self.scheme == "bearer":
            cached = self._tokens.get(scopes)
            if cached is not None and cached.expires_at > time.monotonic():
                return {"Authorization": f"Bearer {cached.token}"}
            return {}
        if self.scheme == "basic" and self.has_credentials:
            return {"Authorization": self.basic_header()}
        return {}

    def answer(
        self,
        challenge_header: str,
        scopes: tuple[str, ...],
        fetch: Callable[[str, list[tuple[str, str]], dict[str, str]], httpx.Response],
        *,
        sent: Mapping[str, str],
    ) -> dict[str, str] | None:
        """Headers to retry with after a 401 to a request sent with ``sent`` headers, or
        None when there is nothing new to try.

        Whether basic credentials were refused is judged by the request itself, not by
        what the client learnt meanwhile: requests sent together before the first
        challenge all go out bare, and each gets its one retry with the credentials.
        """
        challenge = parse_challenge(challenge_header)
        if challenge.scheme == "basic":
            if not self.has_credentials or sent.get("Authorization") == self.basic_header():
                return None  # no credentials, or this request carried them and was refused
            self.scheme = "basic"
            return {"Authorization": self.basic_header()}
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            return None
        self.scheme = "bearer"
        token = self._fetch_token(challenge, scopes, fetch)
        return {"Authorization": f"Bearer {token}"}

    def _fetch_token(
        self,
        challenge: Challenge,
        scopes: tuple[str, ...],
        fetch: Callable[[str, list[tuple[str, str]], dict[str, str]], httpx.Response],
    ) -> str:
        realm = challenge.params["realm"]
        params: list[tuple[str, str]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        wanted = list(scopes)
        for scope in challenge.params.get("scope", "").split():
            if scope not in wanted:
                wanted.append(scope)
        params += [("scope", scope) for scope in wanted]
        headers = {"Authorization": self.basic_header()} if self.has_credentials else {}
        self.token_requests += 1
        response = fetch(realm, params, headers)
        if response.status_code != 200:
            raise TokenRefused(realm, response)
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenRefused(realm, response)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 60.0
        # Renew a little early, so a token does not expire between the check and the call.
        self._tokens[scopes] = CachedToken(token, time.monotonic() + max(lifetime - 10.0, 1.0))
        return token
