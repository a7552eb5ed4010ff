"""The platform's git remote: smart HTTP through ``git http-backend``, and push reports.

``/git/<stack>.git/...`` takes HTTP Basic auth with a token as the password (any user
name), so ``git push`` works with the URL ``stackyard remote STACK`` prints, which holds a
token scoped to pushing to that one stack. Pushing takes ``push`` on the stack
(``GIT_PUSH``), fetching ``read`` (``GIT_FETCH``), checked by the same ``decide`` as the
API, with the same rate limit on wrong tokens. Each push runs the repository's
post-receive hook, which reports the ref updates to ``POST /api/v1/stacks/{name}/pushes``
with the pusher's own token; that route starts the pipeline run (recording who pushed)
and answers with the lines git shows as ``remote: Stackyard: ...``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from stackyard.access.rules import Action, Need, Target, decide
from stackyard.api.auth import Me, authenticate
from stackyard.errors import NotFoundError, StackyardError
from stackyard.pipeline.runs import RunView
from stackyard.source.remote import (
    BACKEND_TIMEOUT,
    SERVICES,
    SMART_ROUTES,
    BackendRequest,
    HostedRemotes,
    backend_argv,
    backend_environ,
    ignore_reason,
    parse_cgi_head,
    parse_ref_updates,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/git", tags=["git"])
"""Mounted at the root, outside ``/api/v1``: it checks Basic auth itself."""

push_router = APIRouter(prefix="/stacks", tags=["triggers"])
"""Under ``/api/v1``: the post-receive hook calls it with the pusher's token."""

REALM = 'Basic realm="stackyard"'
CHUNK = 65536
GIT_FETCH = Need(Action.READ, stack="stack")
"""``git fetch``/``clone`` of a stack's remote (upload-pack)."""
GIT_PUSH = Need(Action.PUSH, stack="stack")
"""``git push`` to a stack's remote (receive-pack): a push token of that stack will do."""
HOW_TO_AUTHENTICATE = (
    "get the remote URL with `stackyard remote {stack}`: it holds a token that can push to {stack}"
)


def remotes_root(request: Request) -> Path:
    root: Path = request.app.state.context.settings.remotes_dir
    return root


def basic_password(authorization: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, None if there is none."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return "stackyard", encoded.strip()
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else None


def _text(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    # git prints a text/plain error body as "remote: ..." lines before its own message.
    return Response(
        f"stackyard: {message}\n",
        status_code=status,
        media_type="text/plain; charset=utf-8",
        headers=headers,
    )


@router.api_route("/{stack}.git/{path:path}", methods=["GET", "POST"], include_in_schema=False)
async def smart_http(stack: str, path: str, request: Request) -> Response:
    context = request.app.state.context
    credentials = basic_password(request.headers.get("authorization"))
    how = HOW_TO_AUTHENTICATE.format(stack=stack)
    if credentials is None or not credentials[1]:
        request.state.audit_detail = "no token"
        return _text(401, f"git needs a token as the password: {how}", {"WWW-Authenticate": REALM})
    try:
        principal = await run_in_threadpool(authenticate, request, credentials[1])
    except HTTPException as exc:
        if exc.status_code != 401:
            return _text(exc.status_code, str(exc.detail), exc.headers)
        reason = str(exc.detail).split(":")[0]
        return _text(401, f"{reason}; {how}", {"WWW-Authenticate": REALM})
    service = request.query_params.get("service", "")
    smart = (request.method, path) in SMART_ROUTES
    if not smart or (path == "info/refs" and service not in SERVICES):
        return _text(404, f"{path} is not served: Stackyard speaks git's smart HTTP protocol only")
    pushing = "git-receive-pack" in (path, service)
    decision = decide(principal, GIT_PUSH if pushing else GIT_FETCH, Target(stack))
    if not decision.allowed:
        request.state.audit_detail = decision.reason
        return _text(403, decision.reason)
    try:
        stack_view = await run_in_threadpool(context.services.stacks.get, stack)
    except NotFoundError:
        return _text(
            404,
            f"no stack named '{stack}'; create it with `stackyard stacks create {stack} "
            "--repo ...`",
        )
    root = remotes_root(request)
    repo = await run_in_threadpool(HostedRemotes(root).ensure, stack, stack_view.branch)
    backend = BackendRequest(
        stack=stack,
        method=request.method,
        path=path,
        query=request.url.query,
        content_type=request.headers.get("content-type", ""),
        content_length=request.headers.get("content-length", ""),
        content_encoding=request.headers.get("content-encoding", ""),
        git_protocol=request.headers.get("git-protocol", ""),
        remote_user=principal.name,
        remote_addr=request.client.host if request.client else "",
    )
    env = backend_environ(
        backend,
        root=root,
        hook_url=f"{context.settings.api_url}/api/v1/stacks/{stack}/pushes",
        hook_token=credentials[1],  # the pusher's own: the report is theirs
    )
    return BackendResponse(backend_argv(repo), env, request)


class BackendResponse(Response):
    """Runs ``git http-backend`` as CGI while the response is sent, streaming both ways.

    Starlette's `StreamingResponse` would read the request's receive channel to notice a
    disconnect, while the request body is still going to git's stdin; this response owns
    both ends instead.
    """

    def __init__(self, argv: list[str], env: dict[str, str], request: Request) -> None:
        super().__init__()
        self.argv = argv
        self.env = env
        self.request = request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        if process.stdin is None or process.stdout is None or process.stderr is None:
            raise RuntimeError("git http-backend started without its pipes")
        watchdog = asyncio.get_running_loop().call_later(BACKEND_TIMEOUT, _kill, process)
        feeding = asyncio.create_task(self._feed(process.stdin))
        errors = asyncio.create_task(process.stderr.read())
        try:
            head = await _read_head(process.stdout)
            if head is None:
                await process.wait()
                message = (await errors).decode(errors="replace").strip()
                log.error("git http-backend failed for %s: %s", self.env["PATH_INFO"], message)
                await _send_text(send, 500, f"stackyard: git failed: {message}\n")
                return
            status, headers = parse_cgi_head(head)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
                }
            )
            while chunk := await process.stdout.read(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await process.wait()
        finally:
            watchdog.cancel()
            if process.returncode is None:
                _kill(process)
                await process.wait()
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeding
            stderr = (await errors).decode(errors="replace").strip()
            if stderr:
                log.warning("git http-backend %s: %s", self.env["PATH_INFO"], stderr)

    async def _feed(self, stdin: asyncio.StreamWriter) -> None:
        """The request body to git's stdin, as it arrives (gzip stays gzip: git inflates)."""
        try:
            async for chunk in self.request.stream():
                if chunk:
                    stdin.write(chunk)
                    await stdin.drain()
        finally:
            stdin.close()
            with contextlib.suppress(OSError):
                await stdin.wait_closed()


async def _read_head(stdout: asyncio.StreamReader) -> bytes | None:
    """The CGI header block, up to the blank line; None if git printed none."""
    lines: list[bytes] = []
    while True:
        line = await stdout.readline()
        if not line:
            return None
        if not line.strip():
            return b"".join(lines)
        lines.append(line)


async def _send_text(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


# -- the post-receive hook's report ---------------------------------------------------


class PushReport(BaseModel):
    """What the post-receive hook read on its stdin: ``<old> <new> <ref>`` lines."""

    updates: str


class PushAnswer(BaseModel):
    messages: list[str]
    """Lines the hook prints; git shows each as ``remote: Stackyard: <line>``."""
    runs: list[RunView]


def run_message(stack: str, run: RunView, sha: str) -> str:
    if run.status == "SKIPPED":
        return f"pipeline run {run.number} for {sha[:7]} SKIPPED: {run.error or 'nothing to do'}"
    return (
        f"pipeline run {run.number} started for {sha[:7]} \N{EM DASH} follow it: "
        f"stackyard runs {stack} --watch"
    )


@push_router.post("/{name}/pushes")
def record_push(name: str, report: PushReport, request: Request, me: Me) -> PushAnswer:
    """Start a run for a push to the stack's branch through the platform's git remote;
    the run records who pushed (the owner of the token the push came with)."""
    context: Any = request.app.state.context
    stack = context.services.stacks.get(name)
    source_url = str(HostedRemotes(remotes_root(request)).repo_path(name))
    answer = PushAnswer(messages=[], runs=[])
    pushes = parse_ref_updates(report.updates)
    if not pushes:
        answer.messages.append("no ref updates in this push; nothing started")
    for push in pushes:
        reason = ignore_reason(push, stack.branch)
        if reason is not None or push.after is None:
            answer.messages.append(f"nothing started: {reason}")
            continue
        try:
            run = context.services.runs.start_run(
                name,
                trigger="git push",
                ref=push.branch,
                commit=push.after,
                before=push.before,
                source_url=source_url,
                pushed_by=me.name,
            )
        except StackyardError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            answer.messages.append(f"no pipeline run for {push.after[:7]}: {exc.message}{hint}")
            continue
        answer.runs.append(run)
        answer.messages.append(run_message(name, run, push.after))
    return answer
