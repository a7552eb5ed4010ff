"""The CLI's HTTP client for the API: finds the URL and admin token by itself.

Order: ``STACKYARD_URL``/``STACKYARD_TOKEN``, then the running platform's state file and
token file in the data directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stackyard.errors import ComponentError, NotFoundError, StackyardError, UsageError
from stackyard.settings import Settings

if TYPE_CHECKING:
    import ssl

    import httpx


@dataclass
class ApiClient:
    base_url: str
    token: str
    timeout: float = 30.0

    @classmethod
    def discover(cls, settings: Settings) -> ApiClient:
        from stackyard.platform.credentials import read_token
        from stackyard.platform.lifecycle import running_state

        url = os.environ.get("STACKYARD_URL")
        if url is None:
            state = running_state(settings)
            if state is None:
                raise ComponentError(
                    f"no Stackyard is running for {settings.data_dir}",
                    hint="start it with `stackyard up -d`, or set STACKYARD_URL",
                )
            url = state.api_url
        token = os.environ.get("STACKYARD_TOKEN") or read_token(settings.token_file)
        return cls(url.rstrip("/"), token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        # Imported here, not at the top: --version and --help should not pay for httpx.
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self.tls())
        try:
            response = httpx.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise ComponentError(
                f"the API at {self.base_url} did not answer: {exc}",
                hint="is the platform running? try `stackyard up -d`",
            ) from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json() if response.content else None

    def text(self, path: str, **kwargs: Any) -> str:
        """GET a plain-text resource (a log)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            response = httpx.get(
                self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except httpx.TransportError as exc:
            raise ComponentError(f"the API at {self.base_url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response.text

    def raise_for(self, response: httpx.Response) -> None:
        raise _error_from(response)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def tls(self) -> ssl.SSLContext | bool:
        """httpx's ``verify``: the CA bundle for an https API; for plain http (the local
        platform) a context that trusts nothing, since no TLS happens and loading the bundle
        costs ~0.1 s on every request."""
        import ssl

        if self.base_url.startswith("https://"):
            return True
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _error_from(response: httpx.Response) -> StackyardError:
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text}
    message = body.get("error") or body.get("detail") or response.reason_phrase
    hint = body.get("hint")
    if response.status_code == 401:
        return UsageError(
            f"the API refused the admin token: {message}",
            hint="check STACKYARD_TOKEN or the token file of this data dir",
        )
    if response.status_code == 404:
        return NotFoundError(str(message), hint=hint)
    if 400 <= response.status_code < 500:
        return UsageError(str(message), hint=hint)
    return StackyardError(f"the API failed ({response.status_code}): {message}", hint=hint)
