"""Webhooks from GitHub and GitLab: a verified push to the stack's branch starts a run.

``/api/v1/hooks/{github,gitlab}/{stack}`` take no token: GitHub signs the body with
the stack's webhook secret (``X-Hub-Signature-256``), GitLab sends the secret itself
(``X-Gitlab-Token``). Anything unsigned or wrongly signed gets 401 and starts nothing.
The run records the pusher the payload names (GitHub's ``pusher.name``, GitLab's
``user_username``), as the webhook says it: the platform cannot check it, but the
signature shows the git host sent it. ``GET /api/v1/stacks/{name}/webhook`` (admin)
shows the URLs and the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from stackyard.errors import NotFoundError, StackyardError, UsageError
from stackyard.source.remote import ZERO_SHA, Push, ignore_reason

MAX_BODY = 5 * 1024 * 1024
"""Bytes a webhook body may have (GitHub caps its payloads at 25 MB; pushes are far less)."""
GITHUB_MAX_COMMITS = 2048
"""GitHub lists at most this many commits in a push payload."""

router = APIRouter(prefix="/api/v1/hooks", tags=["webhooks"])
"""Mounted without the token dependency: each route verifies its sender itself."""

admin_router = APIRouter(prefix="/stacks", tags=["webhooks"])
"""Under ``/api/v1``, for admins."""


class WebhookRefused(Exception):
    """A webhook request answered with ``status`` and nothing started."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- deciding: verification and payloads, no I/O --------------------------------------


def github_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256`` is ``sha256=`` + the HMAC-SHA256 of the raw body."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256=").strip().lower(), expected)


def gitlab_token_ok(secret: str, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest((header or "").encode(), secret.encode())


def changed_paths(commits: Iterable[dict[str, Any]]) -> tuple[str, ...]:
    """Every path a push's commits added, modified or removed, sorted, without repeats."""
    paths: set[str] = set()
    for commit in commits:
        for key in ("added", "modified", "removed"):
            paths.update(str(path) for path in commit.get(key) or [])
    return tuple(sorted(paths))


def github_push(payload: dict[str, Any]) -> Push:
    """The push a GitHub ``push`` event describes.

    Changed paths are given only when the payload lists every commit: not for a new
    branch, a forced push, or a push past GitHub's commit limit (then the pipeline
    diffs ``before`` and ``after`` itself).
    """
    commits = _commits(payload)
    complete = (
        bool(commits)
        and not payload.get("created")
        and not payload.get("forced")
        and len(commits) < GITHUB_MAX_COMMITS
    )
    return _push(payload, changed_paths(commits) if complete else None)


def gitlab_push(payload: dict[str, Any]) -> Push:
    """The push a GitLab ``Push Hook`` describes; GitLab lists at most 20 commits."""
    commits = _commits(payload)
    total = payload.get("total_commits_count")
    before = str(payload.get("before") or ZERO_SHA)
    complete = bool(commits) and total == len(commits) and before != ZERO_SHA
    return _push(payload, changed_paths(commits) if complete else None)


def _commits(payload: dict[str, Any]) -> list[dict[str, Any]]:
    commits = payload.get("commits") or []
    if not isinstance(commits, list):
        raise WebhookRefused(400, "the payload's 'commits' is not a list")
    return [commit for commit in commits if isinstance(commit, dict)]


def _push(payload: dict[str, Any], paths: tuple[str, ...] | None) -> Push:
    ref, before, after = (payload.get(key) for key in ("ref", "before", "after"))
    if not all(isinstance(value, str) for value in (ref, before, after)):
        raise WebhookRefused(400, "the push payload has no ref, before and after")
    return Push.from_shas(str(ref), str(before), str(after), paths)


def pusher(payload: dict[str, Any]) -> str:
    """Who pushed, as the payload says: GitHub's ``pusher.name``, GitLab's
    ``user_username``; "" when it names nobody."""
    found = payload.get("pusher")
    name = found.get("name") if isinstance(found, dict) else payload.get("user_username")
    return str(name)[:64] if isinstance(name, str) else ""


def parse_json(body: bytes, content_type: str) -> dict[str, Any]:
    """The payload as JSON, or from the ``payload`` field of a form-encoded body (GitHub)."""
    text = body.decode("utf-8", errors="replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        text = (parse_qs(text).get("payload") or [""])[0]
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise WebhookRefused(400, f"the body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise WebhookRefused(400, "the payload is not a JSON object")
    return payload


# -- doing: the routes ----------------------------------------------------------------


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refused with 413 past ``limit`` (declared or actually sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise WebhookRefused(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise WebhookRefused(413, f"the body is over {limit} bytes")
    return bytes(body)


async def _secret(request: Request, stack: str) -> str:
    try:
        secret: str = await run_in_threadpool(
            request.app.state.context.services.stacks.webhook_secret, stack
        )
    except NotFoundError as exc:
        # Said like a bad signature: an unsigned caller learns nothing about stack names.
        raise WebhookRefused(401, _unverified(stack)) from exc
    return secret


def _unverified(stack: str) -> str:
    return (
        f"the webhook for stack '{stack}' is not verified: wrong or missing secret, or no "
        f"such stack; see `stackyard webhook {stack}`"
    )


@router.post("/github/{stack}")
async def github_hook(stack: str, request: Request) -> JSONResponse:
    try:
        body = await read_body(request)
        secret = await _secret(request, stack)
        if not github_signature_ok(secret, body, request.headers.get("x-hub-signature-256")):
            raise WebhookRefused(401, _unverified(stack))
        event = request.headers.get("x-github-event", "")
        if event == "ping":
            return JSONResponse({"message": "pong"})
        if event != "push":
            raise WebhookRefused(400, f"event {event!r} is not handled; send push events only")
        payload = parse_json(body, request.headers.get("content-type", ""))
        delivery = request.headers.get("x-github-delivery")
        return await _start(
            request, stack, github_push(payload), "github push", pusher(payload), delivery
        )
    except WebhookRefused as refused:
        return JSONResponse({"error": refused.message}, status_code=refused.status)


@router.post("/gitlab/{stack}")
async def gitlab_hook(stack: str, request: Request) -> JSONResponse:
    try:
        body = await read_body(request)
        secret = await _secret(request, stack)
        if not gitlab_token_ok(secret, request.headers.get("x-gitlab-token")):
            raise WebhookRefused(401, _unverified(stack))
        event = request.headers.get("x-gitlab-event", "")
        if event == "Tag Push Hook":
            # Not 4xx: GitLab disables a hook that keeps answering 4xx.
            return JSONResponse({"message": "ignored: tags start no run"}, status_code=202)
        if event != "Push Hook":
            raise WebhookRefused(400, f"event {event!r} is not handled; send push events only")
        payload = parse_json(body, "application/json")
        # A retried delivery keeps its Idempotency-Key (GitLab 17.4+); a resent one, the
        # event's UUID.
        delivery = request.headers.get("idempotency-key") or request.headers.get(
            "x-gitlab-event-uuid"
        )
        return await _start(
            request, stack, gitlab_push(payload), "gitlab push", pusher(payload), delivery
        )
    except WebhookRefused as refused:
        return JSONResponse({"error": refused.message}, status_code=refused.status)


async def _start(
    request: Request,
    stack: str,
    push: Push,
    trigger: str,
    pushed_by: str,
    delivery: str | None = None,
) -> JSONResponse:
    services = request.app.state.context.services
    request.state.actor = f"{trigger.split()[0]} webhook: pushed by {pushed_by or 'unknown'}"
    request.state.audit_parameters = {
        "ref": push.ref, "after": push.after, "pusher": pushed_by, "delivery": delivery or ""
    }  # fmt: skip
    view = await run_in_threadpool(services.stacks.get, stack)
    reason = ignore_reason(push, view.branch)
    if reason is not None or push.after is None:
        return JSONResponse({"message": f"ignored: {reason}", "run": None}, status_code=202)
    if delivery:
        seen = await run_in_threadpool(services.runs.delivered, stack, delivery)
        if seen is not None:  # delivered again: that push has its run, not a second one
            message = f"delivery {delivery} was received before: pipeline run {seen.number}"
            return JSONResponse({"message": message, "run": seen.model_dump(mode="json")})
    try:
        run = await run_in_threadpool(
            lambda: services.runs.start_run(
                stack,
                trigger=trigger,
                ref=push.branch,
                commit=push.after,
                before=push.before,
                changed_paths=list(push.changed_paths) if push.changed_paths is not None else None,
                pushed_by=pushed_by,
                delivery=delivery,
            )
        )
    except StackyardError as exc:
        raise WebhookRefused(_status_of(exc), f"no run started: {exc.message}") from exc
    await run_in_threadpool(services.poller.mark_seen, stack, push.after)
    message = f"pipeline run {run.number} started for {push.after[:7]}"
    if run.status == "SKIPPED":
        message = f"pipeline run {run.number} for {push.after[:7]} SKIPPED: {run.error}"
    return JSONResponse({"message": message, "run": run.model_dump(mode="json")}, status_code=202)


def _status_of(error: StackyardError) -> int:
    """404 and 400 for what the sender got wrong; else 503 when a retry may help."""
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, UsageError):
        return 400
    return 503 if error.retryable else 500


# -- the admin view -------------------------------------------------------------------


class WebhookView(BaseModel):
    stack: str
    secret: str
    github_url: str
    gitlab_url: str
    content_type: str = "application/json"


@admin_router.get("/{name}/webhook")
def webhook(name: str, request: Request) -> WebhookView:
    """The webhook URLs and the stack's secret (made on first request)."""
    return _webhook_view(request, name, request.app.state.context.services.stacks.webhook_secret)


@admin_router.post("/{name}/webhook/rotate")
def rotate_webhook(name: str, request: Request) -> WebhookView:
    """A new secret for the stack's webhooks (the old one stops working at once)."""
    stacks = request.app.state.context.services.stacks
    return _webhook_view(request, name, stacks.rotate_webhook_secret)


def _webhook_view(request: Request, name: str, secret_of: Callable[[str], str]) -> WebhookView:
    secret = secret_of(name)
    # Where git hosts reach the API: the published URL (``--public-api``, ``--public-url``),
    # else the base the caller reached the API at (behind a proxy, the public one).
    settings = request.app.state.context.settings
    base = settings.published_url or str(request.base_url).rstrip("/")
    return WebhookView(
        stack=name,
        secret=secret,
        github_url=f"{base}{router.prefix}/github/{name}",
        gitlab_url=f"{base}{router.prefix}/gitlab/{name}",
    )
