"""docs/people.md shows the permission table of every route, generated from the app.

``STACKYARD_UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_permissions.py`` rewrites
the block between its markers; without it, the test fails when the block is stale.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from stackyard.access.rules import Need, StageFrom
from stackyard.api.permissions import NEEDS, PUBLIC
from tests.access_yard import access_yard, walk

DOC = Path(__file__).resolve().parents[2] / "docs" / "people.md"
START, END = "<!-- permissions:start -->", "<!-- permissions:end -->"
STAGES = {
    StageFrom.NONE: "",
    StageFrom.PATH: "the stage's deployers",
    StageFrom.QUERY: "the deployers of `?stage=`, else of every protected stage",
    StageFrom.QUERY_OR_BUILD: (
        "the deployers of `?stage=`, else of every protected stage (none with `?build=true`)"
    ),
    StageFrom.FORM: "the deployers of the form's stage",
    StageFrom.FORM_SCOPE: "the deployers of the form's scope (every protected stage for the stack)",
}


def permission(need: Need) -> str:
    if need.action is None:
        return "a person's own token" if need.people_only else "any valid token"
    where = "on the stack" if need.stack else "on the platform"
    own = ", with a person's own token" if need.people_only else ""
    return f"`{need.action}` {where}{own}"


def protection(need: Need) -> str:
    if need.gate:
        return "the stage's approvers (and four eyes)"
    return STAGES[need.stage]


def render(app: FastAPI) -> str:
    rows = ["| route | needs | on a protected stage |", "|---|---|---|"]
    for method, path, endpoint in sorted(walk(app.routes), key=lambda r: (r[1], r[0])):
        if endpoint in NEEDS:
            need = NEEDS[endpoint]
            rows.append(f"| `{method} {path}` | {permission(need)} | {protection(need)} |")
        elif endpoint in PUBLIC:
            rows.append(f"| `{method} {path}` | {PUBLIC[endpoint]} | |")
    return "\n".join(rows)


def test_docs_people_md_shows_the_permission_table(tmp_path: Path) -> None:
    with access_yard(tmp_path) as yard:
        table = render(yard.client.app)  # type: ignore[arg-type]
    text = DOC.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    expected = f"{head}{START}\n{table}\n{END}{tail}"
    if os.environ.get("STACKYARD_UPDATE_DOCS") == "1":
        DOC.write_text(expected, encoding="utf-8")
    assert text == expected, (
        "docs/people.md's permission table is stale; rewrite it with "
        "STACKYARD_UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_permissions.py"
    )
