"""A stand-in for `PipelineService.start_run` that records each trigger and starts nothing,
and the API app around it.

Used by the webhook, poller and git-remote tests, which check exactly what a trigger
passes on to the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from stackyard.api.app import ApiContext, create_app
from stackyard.engines.fake import FakeEngine
from stackyard.pipeline.runs import RunView
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.stacks.service import StackChanges
from stackyard.store.database import migrate, open_database, session_factory


@dataclass
class RecordingRuns:
    """Same signature as `PipelineService.start_run`; records calls, starts nothing.

    ``error``, when set, is raised instead (the pipeline refusing the run).
    """

    calls: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[str, int] = field(default_factory=dict)  # delivery id -> run number
    error: Exception | None = None

    def start_run(
        self,
        stack_name: str,
        *,
        trigger: str,
        ref: str | None = None,
        commit: str | None = None,
        before: str | None = None,
        source_url: str | None = None,
        changed_paths: list[str] | None = None,
        pushed_by: str = "",
        delivery: str | None = None,
    ) -> RunView:
        if self.error is not None:
            raise self.error
        if delivery is not None:
            self.deliveries[delivery] = len(self.calls) + 1
        self.calls.append(
            {
                "stack": stack_name,
                "trigger": trigger,
                "ref": ref,
                "commit": commit,
                "before": before,
                "source_url": source_url,
                "changed_paths": changed_paths,
                "pushed_by": pushed_by,
                **({"delivery": delivery} if delivery is not None else {}),
            }
        )
        return self._view(len(self.calls))

    def delivered(self, stack_name: str, delivery: str) -> RunView | None:
        """As `PipelineService.delivered`: the run that delivery started, if any."""
        number = self.deliveries.get(delivery)
        return None if number is None else self._view(number)

    def _view(self, number: int) -> RunView:
        call = self.calls[number - 1]
        ref, commit = call["ref"], call["commit"]
        return RunView(
            stack=call["stack"],
            number=number,
            ref=ref or "",
            commit_sha=commit or "",
            trigger=call["trigger"],
            status="QUEUED",
            error="",
            log_path="",
            created_at=datetime.now(UTC),
            started_at=None,
            finished_at=None,
            steps=[],
        )


@dataclass
class RecordingApi:
    app: FastAPI
    services: Services
    runs: RecordingRuns
    settings: Settings


@contextmanager
def recording_api(
    data_dir: Path, token: str, stacks: dict[str, str], **settings_fields: Any
) -> Iterator[RecordingApi]:
    """The real API app on a fresh store in ``data_dir`` (fake engine and router), with
    ``stacks`` (name -> repo) created and a RecordingRuns in place of the pipeline."""
    settings = Settings(data_dir=data_dir, **settings_fields)
    database = open_database(settings.database_url)
    migrate(database)
    services = build_services(
        settings,
        session_factory(database),
        RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password"),
        engine=FakeEngine(),
        router=FakeRouter(),
    )
    runs = RecordingRuns()
    services.runs = runs  # type: ignore[assignment]
    for name, repo in stacks.items():
        services.stacks.create(name, StackChanges(repo=repo))
    try:
        yield RecordingApi(
            create_app(ApiContext(settings, token, {}, services)),
            services,
            runs,
            settings,
        )
    finally:
        database.dispose()
