"""The console's pages (GET, behind a session) and the fragments they poll to stay live.

Pages without a session redirect to the login page; fragments answer 401, which the page's
script turns into that redirect. Each page is checked against the permission table like
an API route (``api/auth.py``), and shows only the actions its viewer may take.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from stackyard.api.auth import console_fragment, console_page
from stackyard.api.web.render import page
from stackyard.api.web.views import (
    audit_context,
    disk_context,
    domains_context,
    nodes_context,
    services,
    stack_context,
    stacks_overview,
    targets_context,
    variables_context,
)
from stackyard.deploy.service import CheckView
from stackyard.errors import AccessDenied, NotFoundError, StackyardError

router = APIRouter(prefix="/ui", dependencies=[Depends(console_page)], include_in_schema=False)
fragments = APIRouter(
    prefix="/ui/fragments", dependencies=[Depends(console_fragment)], include_in_schema=False
)
root = APIRouter(dependencies=[Depends(console_page)], include_in_schema=False)

LogKind = Literal["build", "release", "deployment", "run"]
FRAGMENT_HEADERS = {"Cache-Control": "no-store"}


def problem(request: Request, exc: StackyardError) -> HTMLResponse:
    """A console page for an error a service raised: its message and what to do."""
    code = 404 if isinstance(exc, NotFoundError) else 403 if isinstance(exc, AccessDenied) else 400
    return page(
        request,
        "problem.html",
        {"message": exc.message, "hint": exc.hint},
        status_code=code,
    )


@root.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("", include_in_schema=False)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("/")
def stacks_page(request: Request) -> HTMLResponse:
    view = stacks_overview(request)
    return page(request, "stacks.html", {"overview": view, "disk": disk_context(request)})


@fragments.get("/stacks")
def stacks_fragment(request: Request) -> HTMLResponse:
    view = stacks_overview(request)
    response = page(request, "_stack_grid.html", {"overview": view})
    response.headers.update(FRAGMENT_HEADERS)
    return response


@router.get("/stacks/{name}")
def stack_page(request: Request, name: str) -> HTMLResponse:
    try:
        return page(request, "stack.html", stack_context(request, name))
    except StackyardError as exc:
        return problem(request, exc)


@fragments.get("/stacks/{name}")
def stack_fragment(request: Request, name: str) -> HTMLResponse:
    try:
        return page(request, "_stack_live.html", stack_context(request, name))
    except StackyardError as exc:
        return problem(request, exc)


@router.get("/stacks/{name}/logs")
def log_page(
    request: Request,
    name: str,
    kind: LogKind,
    number: Annotated[int, Query(ge=1)],
    stage: str | None = None,
) -> HTMLResponse:
    """A build, release, deployment or run log, followed live from the SSE endpoint."""
    try:
        services(request).stacks.get(name)
        if kind in ("release", "deployment") and not stage:
            raise StackyardError(f"a {kind} log needs a stage", hint="add ?stage=NAME")
    except StackyardError as exc:
        return problem(request, exc)
    query: dict[str, Any] = {"kind": kind, "number": number, "follow": "true"}
    if stage:
        query["stage"] = stage
    title = f"{kind} {number}" + (f" of {stage}" if stage else "")
    return page(
        request,
        "logs.html",
        {
            "stack_name": name,
            "title": title,
            "stream": f"/api/v1/stacks/{name}/logs?{urlencode(query)}",
        },
    )


@router.get("/stacks/{name}/stages/{stage}/logs")
def task_log_page(request: Request, name: str, stage: str) -> HTMLResponse:
    """The stage's task logs, followed live; secrets are masked by the API."""
    try:
        services(request).deploy.url(name, stage)  # a clear 404 for an unknown stage
    except StackyardError as exc:
        return problem(request, exc)
    stream = f"/api/v1/stacks/{name}/stages/{stage}/tasks/logs?follow=true&tail=200"
    return page(
        request,
        "logs.html",
        {"stack_name": name, "title": f"tasks of {stage}", "stream": stream},
    )


@router.get("/stacks/{name}/check")
def check_page(request: Request, name: str, stage: str | None = None) -> HTMLResponse:
    """Like `stackyard check`: each stage's digest against every task's."""
    found = services(request)
    try:
        found.stacks.get(name)
        stages = [c.stage for c in stacks_overview(request, only=name).stacks[0].stages]
        if stage is not None and stage not in stages:
            found.deploy.url(name, stage)  # raises the NotFoundError that names the stages
        checks: list[tuple[str, CheckView | None, str | None]] = []
        for each in [stage] if stage else stages:
            try:
                checks.append((each, found.deploy.check(name, each), None))
            except StackyardError as exc:
                checks.append((each, None, exc.message))
    except StackyardError as exc:
        return problem(request, exc)
    return page(request, "check.html", {"stack_name": name, "checks": checks})


@router.get("/stacks/{name}/domains")
def domains_page(
    request: Request, name: str, minutes: Annotated[int, Query(ge=1, le=1440)] = 60
) -> HTMLResponse:
    """Host names with their certificates (state, expiry), and each stage's traffic."""
    try:
        return page(request, "domains.html", domains_context(request, name, minutes))
    except StackyardError as exc:
        return problem(request, exc)


@router.get("/stacks/{name}/variables")
def variables_page(request: Request, name: str) -> HTMLResponse:
    try:
        return page(request, "variables.html", variables_context(request, name))
    except StackyardError as exc:
        return problem(request, exc)


@router.get("/nodes")
def nodes_page(request: Request, target: str = "local") -> HTMLResponse:
    """The cluster's nodes, as `stackyard nodes [--target T]` lists them."""
    try:
        return page(request, "nodes.html", nodes_context(request, target))
    except StackyardError as exc:
        return problem(request, exc)


@router.get("/targets")
def targets_page(request: Request) -> HTMLResponse:
    """Where stages run, as `stackyard targets` lists them; add, check and remove (admin)."""
    try:
        return page(request, "targets.html", targets_context(request))
    except StackyardError as exc:
        return problem(request, exc)


@router.get("/audit")
def audit_page(
    request: Request,
    stack: str | None = None,
    user: str | None = None,
    action: str | None = None,
    since: str | None = None,
) -> HTMLResponse:
    """The audit log, newest first, with the same filters as `stackyard audit`."""
    try:
        return page(request, "audit.html", audit_context(request, stack, user, action, since))
    except StackyardError as exc:
        return problem(request, exc)
