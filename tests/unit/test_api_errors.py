"""How the API answers the errors it raises on purpose: a step the caller asked for that
ran and failed is a 409 with its message, which the CLI prints as it is (no "the API
failed (500)", which reads as the platform's own bug)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.pipeline.releases import ReleaseFailure
from tests.access_yard import access_yard

FAILED = "release of hello dev failed: release.yml: command exited 1"


def test_a_release_that_failed_answers_409_with_its_message_and_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with access_yard(tmp_path) as yard:

        def fail(*_args: object, **_kwargs: object) -> None:
            raise ReleaseFailure(FAILED, hint="see the log: /logs/1.log")

        monkeypatch.setattr(yard.services.releases, "release", fail)
        answer = yard.client.post(
            "/api/v1/stacks/hello/stages/dev/releases", headers=yard.auth("bootstrap")
        )
    assert answer.status_code == 409
    assert answer.json() == {"error": FAILED, "hint": "see the log: /logs/1.log"}
