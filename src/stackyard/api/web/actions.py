"""The console's forms: log in and out, start, approve, promote, cancel and roll back,
and change variables and secrets. Every POST but the login checks the session's CSRF token,
then the person's permission, as the API checks it (``api/auth.py`` ``console_form``).

After an action the page it came from is rendered again with what happened (the page's
script then replaces the POST in the history, so a reload does not send it twice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from stackyard.access.rules import Principal
from stackyard.api.auth import authenticate, console_form, session_principal
from stackyard.api.sessions import (
    clear_session_cookie,
    current_session,
    read_form,
    safe_next,
    sessions_of,
    set_session_cookie,
)
from stackyard.api.web.pages import problem
from stackyard.api.web.render import page
from stackyard.api.web.views import (
    Scope,
    describe_change,
    services,
    stack_context,
    targets_context,
    variables_context,
)
from stackyard.errors import StackyardError, UsageError
from stackyard.platform.targets import TargetAdd, TargetCheck

public = APIRouter(prefix="/ui", include_in_schema=False)
router = APIRouter(prefix="/ui", include_in_schema=False)

Form = Annotated[dict[str, str], Depends(console_form)]


def me(request: Request) -> str:
    """The name of the person whose form this is (``console_form`` checked them)."""
    principal: Principal = request.state.principal
    return principal.name


@public.get("/login", response_model=None)
def login_page(request: Request, next: str | None = None) -> Response:
    if session_principal(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html", {"next": safe_next(next)})


@public.post("/login", response_model=None)
async def login(request: Request) -> Response:
    """A person's own token in, a session cookie out (the token itself is never stored
    there). The same rate limit as the API: too many wrong tokens from one address, 429."""
    form = await read_form(request)
    target = safe_next(form.get("next"))
    try:
        principal = await run_in_threadpool(authenticate, request, form.get("token", "").strip())
    except HTTPException as exc:
        if exc.status_code == 429:
            wait = (exc.headers or {}).get("Retry-After", "60")
            refused = _login_again(request, target, f"Too many wrong tokens from here; "
                                   f"try again in {wait} s.", 429)  # fmt: skip
            refused.headers["Retry-After"] = wait
            return refused
        reason = str(exc.detail).split(":")[0]
        return _login_again(request, target, f"That token does not open the console ({reason}).")
    if not principal.is_person:
        request.state.audit_detail = "a token scoped to a stack cannot open the console"
        return _login_again(
            request,
            target,
            f"That token is scoped to {principal.scope} on {principal.stack}: log in with "
            "your own token (`stackyard users add` printed it).",
            403,
        )
    sessions = sessions_of(request)
    if sessions is None:
        raise HTTPException(status_code=500, detail="the console has no session keys")
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, sessions.issue(principal.token_id))
    return response


def _login_again(request: Request, target: str, error: str, code: int = 401) -> HTMLResponse:
    return page(request, "login.html", {"next": target, "error": error}, status_code=code)


@router.post("/logout")
def logout(request: Request, _form: Form) -> RedirectResponse:
    session, sessions = current_session(request), sessions_of(request)
    if session is not None and sessions is not None:
        sessions.revoke(session)
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session_cookie(response, request)
    return response


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise UsageError(f"the form has no {name}")
    return value


def _on_stack(request: Request, name: str, act: Callable[[], str]) -> HTMLResponse:
    """Do a stack page's action; the page again with what happened, or the problem."""
    try:
        notice = act()
        context = stack_context(request, name)
    except StackyardError as exc:
        return problem(request, exc)
    return page(
        request, "stack.html", {**context, "notice": notice, "canonical": f"/ui/stacks/{name}"}
    )


@router.post("/stacks/{name}/runs")
def start_run(request: Request, name: str, _form: Form) -> HTMLResponse:
    def act() -> str:
        run = services(request).runs.start_run(name, trigger="console", pushed_by=me(request))
        return f"Started pipeline run {run.number}."

    return _on_stack(request, name, act)


@router.post("/stacks/{name}/approve")
def approve(request: Request, name: str, form: Form) -> HTMLResponse:
    def act() -> str:
        stage = _field(form, "stage")
        run = services(request).runs.approve(name, stage, by=me(request))
        return f"Approved {stage} for run {run.number}."

    return _on_stack(request, name, act)


@router.post("/stacks/{name}/promote")
def promote(request: Request, name: str, form: Form) -> HTMLResponse:
    def act() -> str:
        stage = _field(form, "stage")
        run = services(request).runs.promote(name, stage, by=me(request))
        return f"Promoting to {stage}: pipeline run {run.number}."

    return _on_stack(request, name, act)


@router.post("/stacks/{name}/rollback")
def rollback(request: Request, name: str, form: Form) -> HTMLResponse:
    def act() -> str:
        stage = _field(form, "stage")
        to_text = form.get("to", "").strip()
        if to_text and not to_text.isdigit():
            raise UsageError(f"release '{to_text}' is not a number")
        deployment = services(request).redeploy.rollback(
            name, stage, int(to_text) if to_text else None, created_by=me(request)
        )
        return (
            f"Rolling back {stage} to the image and config of an earlier release: "
            f"release {deployment.release_number}, deployment {deployment.number}."
        )

    return _on_stack(request, name, act)


@router.post("/stacks/{name}/runs/{number}/cancel")
def cancel(request: Request, name: str, number: int, _form: Form) -> HTMLResponse:
    def act() -> str:
        run = services(request).runs.cancel(name, number, by=me(request))
        return f"Run {run.number} {run.status}."

    return _on_stack(request, name, act)


def _targets_result(
    request: Request,
    *,
    notice: str = "",
    error: str = "",
    checked: TargetCheck | None = None,
) -> HTMLResponse:
    """The targets page again, with what an action did (or why it did not)."""
    try:
        context = targets_context(request)
    except StackyardError as exc:
        return problem(request, exc)
    return page(
        request,
        "targets.html",
        {**context, "notice": notice, "error": error, "checked": checked,
         "canonical": "/ui/targets"},
        status_code=400 if error else 200,
    )  # fmt: skip


def _on_targets(
    request: Request, act: Callable[[], tuple[str, TargetCheck | None]]
) -> HTMLResponse:
    """Do a targets page action; the page again with what it did, or why it did not."""
    try:
        notice, checked = act()
    except StackyardError as exc:
        return _targets_result(request, error=exc.message)
    return _targets_result(request, notice=notice, checked=checked)


@router.post("/targets")
def add_target(request: Request, form: Form) -> HTMLResponse:
    """Add a target, then reach it: a target that does not answer is kept, and said so."""
    found = services(request).targets

    def act() -> tuple[str, TargetCheck | None]:
        engine = form.get("engine", "")
        if engine not in ("docker", "swarm"):
            raise UsageError(f"engine '{engine}' is not one of docker, swarm")
        body = TargetAdd(
            name=_field(form, "name"),
            engine="docker" if engine == "docker" else "swarm",
            endpoint=_field(form, "endpoint"),
            registry=form.get("registry", "").strip() or "local",
            region=form.get("region", "").strip(),
        )
        added = found.add(body, created_by=me(request))
        notice = f"Added target {added.name}: {added.engine} {added.endpoint}."
        return notice, found.check(added.name)

    return _on_targets(request, act)


@router.post("/targets/{target_name}/check")
def check_target(request: Request, target_name: str, _form: Form) -> HTMLResponse:
    return _on_targets(request, lambda: ("", services(request).targets.check(target_name)))


@router.post("/targets/{target_name}/remove")
def remove_target(request: Request, target_name: str, _form: Form) -> HTMLResponse:
    def act() -> tuple[str, TargetCheck | None]:
        removed = services(request).targets.remove(target_name)
        return f"Removed target {removed.name}.", None

    return _on_targets(request, act)


def _variables_result(
    request: Request, name: str, lines: list[str], *, error: str | None = None
) -> HTMLResponse:
    context = variables_context(request, name)
    return page(
        request,
        "variables.html",
        {
            **context,
            "notice_lines": lines,
            "error": error,
            "canonical": f"/ui/stacks/{name}/variables",
        },
        status_code=400 if error else 200,
    )


@router.post("/stacks/{name}/variables")
def change_variable(request: Request, name: str, form: Form) -> HTMLResponse:
    """Set or unset one variable; the service redeploys (runtime) or rebuilds (build)."""
    try:
        services(request).stacks.get(name)
    except StackyardError as exc:
        return problem(request, exc)
    try:
        scope = Scope.parse(form.get("scope", ""))
        variable = _field(form, "name")
        found = services(request).variables
        if form.get("action") == "unset":
            change = found.change_variables(
                name, unset=[variable], stage=scope.stage, build=scope.build, created_by=me(request)
            )
        else:
            change = found.change_variables(
                name,
                values={variable: form.get("value", "")},
                stage=scope.stage,
                build=scope.build,
                created_by=me(request),
            )
    except StackyardError as exc:
        return _variables_result(request, name, [], error=exc.message)
    return _variables_result(request, name, describe_change(change, scope))


@router.post("/stacks/{name}/secrets")
def change_secret(request: Request, name: str, form: Form) -> HTMLResponse:
    """Set or unset a secret. Its value goes to the service and is never rendered back."""
    try:
        services(request).stacks.get(name)
    except StackyardError as exc:
        return problem(request, exc)
    try:
        scope = Scope.parse(form.get("scope", ""))
        if scope.build:
            raise UsageError("secrets belong to every stage or to one stage, not to the build")
        secret = _field(form, "name")
        found = services(request).variables
        if form.get("action") == "unset":
            change = found.unset_secret(name, secret, stage=scope.stage, created_by=me(request))
        else:
            change = found.set_secret(
                name, secret, form.get("value", ""), stage=scope.stage, created_by=me(request)
            )
    except StackyardError as exc:
        return _variables_result(request, name, [], error=exc.message)
    return _variables_result(request, name, describe_change(change, scope))
