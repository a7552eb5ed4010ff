"""The audit log's writer: one ASGI middleware around the whole app.

It writes an entry for every request that may change something (any method but GET,
HEAD and OPTIONS: API calls, CLI commands, console forms, git pushes, push reports,
webhook deliveries) and for every refused one (401, 403, 429), whatever its method. A
``git fetch`` is a read and is not recorded. What the entry says comes from the request
(who: the principal ``api/auth.py`` left in ``request.state``; the route's permission
table entry; the path and query parameters; the body's fields) and the answer's status.

Secret values never reach an entry: the body is not recorded for the git remote and the
webhooks, fields the route's ``Need.redact`` names (a secret's value) and any field named
like a credential are replaced by ``***``, and only the error message of a failed answer
is read, never a successful answer (which may hold a new token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stackyard.access.audit import AuditLog, AuditRecord
from stackyard.access.rules import Need, Principal

log = logging.getLogger(__name__)

READS = ("GET", "HEAD", "OPTIONS")
REFUSED = (401, 403, 429)
BODY_LIMIT = 64 * 1024
ERROR_LIMIT = 2048
CREDENTIALS = ("token", "csrf_token", "password", "secret")
HIDDEN = "***"


class AuditMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        audit: Callable[[], AuditLog],
        needs: Callable[[], Mapping[Any, Need]],
    ) -> None:
        self.app = app
        self._audit = audit
        self._needs = needs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        keep_body = method not in READS and not path.startswith(("/git/", "/api/v1/hooks/"))
        body = bytearray()
        answer = _Answer()

        async def tee() -> Message:
            message = await receive()
            if keep_body and message["type"] == "http.request" and len(body) < BODY_LIMIT:
                body.extend(message.get("body", b"")[: BODY_LIMIT - len(body)])
            return message

        async def spy(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
            elif message["type"] == "http.response.body" and answer.status >= 400:
                room = ERROR_LIMIT - len(answer.error)
                answer.error.extend(message.get("body", b"")[: max(room, 0)])
            await send(message)

        try:
            await self.app(scope, tee, spy)
        except Exception:
            answer.status = 500
            raise
        finally:
            if _recorded(method, path, answer.status):
                entry = describe(
                    scope, bytes(body), answer.status, bytes(answer.error), self._needs()
                )
                await run_in_threadpool(self._write, entry)

    def _write(self, entry: AuditRecord) -> None:
        try:
            self._audit().record(entry)
        except Exception as exc:  # the change is done; say loudly that its entry is not
            log.error(
                "the audit log could not record %s on %s: %s", entry.action, entry.target, exc
            )


@dataclass
class _Answer:
    status: int = 0
    error: bytearray = field(default_factory=bytearray)  # the start of a failed answer


def _recorded(method: str, path: str, status: int) -> bool:
    if status in REFUSED:
        return True
    if method in READS or path.startswith("/ui/static/"):
        return False
    return not (path.startswith("/git/") and path.endswith("/git-upload-pack"))  # a fetch


def describe(
    scope: Scope, body: bytes, status: int, error: bytes, needs: Mapping[Any, Need]
) -> AuditRecord:
    """The audit entry of one request: plain data from the request and its answer."""
    state: dict[str, Any] = scope.get("state") or {}
    endpoint = scope.get("endpoint")
    need = needs.get(endpoint)
    path_params: dict[str, Any] = dict(scope.get("path_params") or {})
    stack_param = need.stack if need is not None and need.stack else None
    stack = str(path_params.get(stack_param or "name") or path_params.get("stack") or "")
    principal = state.get("principal")
    parameters = {k: v for k, v in path_params.items() if k not in ("name", "stack")}
    parameters.update(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    if need is None or need.audit_body:
        parameters.update(_fields(body, _header(scope, b"content-type"), need))
    parameters.update(state.get("audit_parameters") or {})
    return AuditRecord(
        action=_action(scope, endpoint),
        result="ok" if status < 400 else "refused" if status in REFUSED else "failed",
        status=status,
        actor=principal.name if isinstance(principal, Principal) else str(state.get("actor", "")),
        token_id=principal.token_id
        if isinstance(principal, Principal)
        else str(state.get("refused_token", "")),
        source=(scope.get("client") or ("", 0))[0] or "",
        via=_via(scope),
        stack=stack,
        target=f"{scope['method']} {scope['path']}",
        parameters=parameters,
        detail=str(state.get("audit_detail") or _error_text(error)) if status >= 400 else "",
    )


def _action(scope: Scope, endpoint: Any) -> str:
    """The route's function name (``deploy``, ``set_secret``, ``approve``); a git push or
    fetch (its first request, ``info/refs``, names the service in its query)."""
    if scope["path"].startswith("/git/"):
        pushing = "git-receive-pack" in scope["path"] + scope.get("query_string", b"").decode()
        return "git push" if pushing else "git fetch"
    name = getattr(endpoint, "__name__", "")
    return str(name) or f"{scope['method']} {scope['path']}"


def _via(scope: Scope) -> str:
    path: str = scope["path"]
    if path == "/" or path.startswith("/ui"):
        return "console"
    if path.startswith("/git/"):
        return "git"
    if path.startswith("/api/v1/hooks/"):
        return "webhook"
    agent = _header(scope, b"user-agent")
    if agent.startswith("stackyard-cli/"):
        return "cli"
    if agent.startswith("stackyard-hook/"):
        return "git"
    return "api"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _fields(body: bytes, content_type: str, need: Need | None) -> dict[str, Any]:
    """The body's top-level fields, with secret ones hidden."""
    if not body:
        return {}
    kind = content_type.split(";")[0].strip().lower()
    fields: dict[str, Any]
    if kind == "application/x-www-form-urlencoded":
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    elif kind == "application/json":
        try:
            decoded = json.loads(body)
        except ValueError:
            return {"body": f"{len(body)} bytes, not JSON"}
        fields = decoded if isinstance(decoded, dict) else {"body": decoded}
    else:
        return {"body": f"{len(body)} bytes of {kind or 'unknown type'}"}
    hidden = set(CREDENTIALS) | set(need.redact if need is not None else ())
    return {k: HIDDEN if k in hidden else v for k, v in fields.items()}


def _error_text(error: bytes) -> str:
    """The message of a failed answer: its JSON ``error`` or ``detail``, else its text."""
    text = error.decode("utf-8", "replace")
    try:
        decoded = json.loads(text)
    except ValueError:
        return text.strip()[:500] if not text.lstrip().startswith("<") else ""
    if isinstance(decoded, dict):
        return str(decoded.get("error") or decoded.get("detail") or "")[:500]
    return ""
