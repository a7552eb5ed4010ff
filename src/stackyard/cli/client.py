"""The CLI's HTTP client for the API: finds the URL and admin token by itself.

Order: ``STACKYARD_URL``/``STACKYARD_TOKEN``, then the running platform's state file and
token file in the data directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from stackyard.errors import ComponentError, NotFoundError, StackyardError, UsageError
from stackyard.platform.credentials import read_token
from stackyard.platform.lifecycle import running_state
from stackyard.settings import Settings


@dataclass
class ApiClient:
    base_url: str
    token: str
    timeout: float = 30.0

    @classmethod
    def discover(cls, settings: Settings) -> ApiClient:
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
        headers = {"Authorization": f"Bearer {self.token}"}
        kwargs.setdefault("timeout", self.timeout)
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

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)


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
