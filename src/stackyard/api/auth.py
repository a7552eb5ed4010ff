"""Admin-token authentication for every API route except ``/healthz``.

A GET may also carry the web console's session cookie instead: a browser's EventSource
cannot send an Authorization header, and the console follows logs through the API. Calls
that change state stay Bearer-only, since a cookie alone would need a CSRF check.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stackyard.api.web.session import current_session

bearer = HTTPBearer(auto_error=False, description="The admin token from `stackyard up`.")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Reject the request with 401 unless it carries the admin token (or, for a GET
    without one, a valid console session cookie)."""
    expected: str = request.app.state.token
    given = credentials.credentials if credentials else ""
    if given and hmac.compare_digest(given.encode(), expected.encode()):
        return
    if not given and request.method == "GET" and current_session(request) is not None:
        return
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong admin token; send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )
