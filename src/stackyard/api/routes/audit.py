"""``/api/v1/audit``: the audit log, newest first, filtered by stack, person, action and age."""

from __future__ import annotations

from fastapi import APIRouter, Request

from stackyard.access.audit import AuditList, AuditLog

router = APIRouter(tags=["audit"])


@router.get("/audit")
def audit(
    request: Request,
    stack: str | None = None,
    user: str | None = None,
    action: str | None = None,
    since: str | None = None,
    limit: int = 100,
) -> AuditList:
    log: AuditLog = request.app.state.context.services.audit
    return log.query(stack=stack, actor=user, action=action, since=since, limit=limit)
