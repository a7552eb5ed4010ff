"""Who is calling, and may they: the one authorization check of the API and the console.

Every route but ``/healthz``, the console's login form, the git remote (Basic auth, the
same check in ``routes/git.py``) and the webhooks (signatures) goes through ``check``:

1. the caller's token (``Authorization: Bearer``; for a GET, the console's session
   cookie, since a browser's EventSource cannot send a header) is looked up: a missing,
   unknown, expired or revoked token gets 401 saying which; too many wrong tokens from
   one address or for one token id get 429;
2. the route's ``Need`` comes from the permission table (``api/permissions.py``, put on
   the app as ``app.state.needs``); a route without one is refused (fail closed);
3. ``access.rules.decide`` answers, with the stack's protected stages when the route
   deploys to a stage; a refusal is 403, naming the permission.

The audit log (``api/audit.py``) reads what happened from ``request.state``: the
principal, or why it was refused.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stackyard.access.limits import FailureLimiter, address_key, token_key
from stackyard.access.people import AuthFailed, PeopleService
from stackyard.access.rules import (
    Action,
    Need,
    Principal,
    StageFrom,
    Target,
    decide,
    refusal_hint,
)
from stackyard.access.tokens import token_id_of
from stackyard.api.sessions import (
    CSRF_FIELD,
    ConsoleSession,
    current_session,
    login_location,
    read_form,
)
from stackyard.errors import AccessDenied

bearer = HTTPBearer(auto_error=False, description="Your token (`stackyard login`).")
TRUE = ("1", "true", "yes", "on")
NO_NEED = "no permission is declared for this route, so it is refused"


def people(request: Request) -> PeopleService:
    found: PeopleService = request.app.state.context.services.people
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- who is calling


def authenticate(request: Request, text: str) -> Principal:
    """The principal of a token; 429 while its address or id is locked out, else 401
    with the reason (``token unknown``, ``token expired``, ``token revoked``)."""
    limiter: FailureLimiter = request.app.state.auth_limiter
    token_id = token_id_of(text)
    keys = [address_key(client_address(request))]
    if token_id is not None:
        keys.append(token_key(token_id))
    wait = limiter.wait(*keys)
    if wait > 0:
        refuse_429(request, wait, token_id)
    found = people(request).authenticate(text)
    if isinstance(found, AuthFailed):
        limiter.failed(*keys)
        request.state.refused_token = found.token_id or ""
        raise unauthorized(request, f"{found.reason}: log in with a valid token")
    request.state.principal = found
    return found


def refuse_429(request: Request, wait: float, token_id: str | None) -> None:
    seconds = math.ceil(wait)
    request.state.refused_token = token_id or ""
    raise HTTPException(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"too many wrong tokens from {client_address(request)} or for this token; "
        f"try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def unauthorized(request: Request, detail: str) -> HTTPException:
    request.state.audit_detail = detail
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def session_principal(request: Request) -> tuple[ConsoleSession, Principal] | None:
    """The console session of the request's cookie and its person, while the token it
    was opened with is still valid."""
    session = current_session(request)
    if session is None:
        return None
    found = people(request).session_principal(session.token_id)
    if isinstance(found, AuthFailed):
        return None
    request.state.principal = found
    return session, found


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is not None and credentials.credentials:
        return authenticate(request, credentials.credentials)
    if request.method == "GET":
        found = session_principal(request)
        if found is not None:
            return found[1]
    raise unauthorized(
        request, "no token: send 'Authorization: Bearer <token>' (`stackyard login` stores one)"
    )


# -- may they


def check(request: Request, principal: Principal, form: Mapping[str, str] | None = None) -> None:
    """Raise AccessDenied (403) unless the route's Need allows ``principal`` here."""
    needs: Mapping[Any, Need] = request.app.state.needs
    need = needs.get(request.scope.get("endpoint"))
    if need is None:
        raise AccessDenied(NO_NEED, permission="a permission declared for the route")
    target = target_of(request, need, form or {})
    protections = {}
    if need.action is Action.DEPLOY and target.stack and (target.stages or target.every_stage):
        protections = request.app.state.context.services.protection.of_stack(target.stack)
    decision = decide(principal, need, target, protections)
    if not decision.allowed:
        request.state.audit_detail = decision.reason
        raise AccessDenied(
            decision.reason,
            permission=decision.permission,
            hint=refusal_hint(principal, decision),
        )


def target_of(request: Request, need: Need, form: Mapping[str, str]) -> Target:
    """The stack and stages a request is about, found where its Need says."""
    stack = request.path_params.get(need.stack) if need.stack else None
    query = request.query_params
    match need.stage:
        case StageFrom.PATH:
            return Target(stack, (request.path_params["stage"],))
        case StageFrom.QUERY | StageFrom.QUERY_OR_BUILD:
            if query.get("stage"):
                return Target(stack, (query["stage"],))
            build = need.stage is StageFrom.QUERY_OR_BUILD and query.get("build", "") in TRUE
            return Target(stack, every_stage=not build)
        case StageFrom.FORM:
            return Target(stack, (form.get("stage", "").strip(),))
        case StageFrom.FORM_SCOPE:
            scope = form.get("scope", "")
            if scope.startswith("stage:"):
                return Target(stack, (scope[6:],))
            # "build" changes no stage (the secrets form refuses it before any change).
            return Target(stack, every_stage=scope != "build")
    return Target(stack)


def authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The dependency of every ``/api/v1`` route: who calls, and may they."""
    principal = caller(request, credentials)
    check(request, principal)
    return principal


Me = Annotated[Principal, Depends(authorize)]
"""A route parameter for the caller (the same dependency: it runs once per request)."""


# -- the console's routes


def console_page(request: Request) -> Principal:
    """Dependency of console pages: without a valid session, off to the login page."""
    found = session_principal(request)
    if found is None:
        location = login_location(request) if request.method == "GET" else "/ui/login"
        raise HTTPException(
            status_code=status.HTTP_303_SEE_OTHER,
            detail="log in to the console first",
            headers={"Location": location},
        )
    console_check(request, found[1])
    return found[1]


def console_fragment(request: Request) -> Principal:
    """Dependency of the fragments the pages poll: 401 without a session (no redirect)."""
    found = session_principal(request)
    if found is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="no console session: log in at /ui/login",
        )
    console_check(request, found[1])
    return found[1]


async def console_form(request: Request) -> dict[str, str]:
    """Dependency of every console POST: a session, a form with its CSRF token, then the
    same check as the API's, with the stage the form names."""
    from starlette.concurrency import run_in_threadpool

    found = await run_in_threadpool(session_principal, request)
    if found is None:
        raise HTTPException(
            status_code=status.HTTP_303_SEE_OTHER,
            detail="log in to the console first",
            headers={"Location": "/ui/login"},
        )
    session, principal = found
    form = await read_form(request)
    given = form.pop(CSRF_FIELD, "")
    if not hmac.compare_digest(given.encode(), session.csrf_token.encode()):
        detail = "the form's CSRF token is missing or wrong: reload the page and try again"
        request.state.audit_detail = detail
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)
    await run_in_threadpool(console_check, request, principal, form)
    return form


def console_check(
    request: Request, principal: Principal, form: Mapping[str, str] | None = None
) -> None:
    """``check``, refused with an HTML page (403) instead of JSON."""
    try:
        check(request, principal, form)
    except AccessDenied as exc:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=exc.message) from exc
