"""What the console and the API say about a stage's tasks: health, and their logs.

The console and the API (`tasks`, `check`) ask DeployService, whose task health is the
controller's judgement (HTTP checks included). Here the engine's own (Docker) health and
the HTTP check disagree on purpose: the task answers its HTTP check, while the engine
calls it unhealthy.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stackyard.api.app import ApiContext, create_app
from stackyard.api.routes import logs as logs_route
from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_STACK,
    LABEL_STAGE,
    EngineError,
    Health,
    TaskLog,
    TaskSpec,
)
from stackyard.engines.fake import FakeEngine
from stackyard.pipeline.releases import config_snapshot
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Deployment, Release, Stack

TOKEN = "stage-health-token"
STACK, STAGE = "shop", "dev"
DIGEST = "sha256:" + "5" * 64
CONFIG = {"stages": [{"name": STAGE, "replicas": 1, "health": {"path": "/"}}]}


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        return  # quiet: the test reads no server log


@pytest.fixture
def app_port() -> Iterator[int]:
    """A task's app on loopback: it passes its HTTP health check."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Engine(FakeEngine):
    """FakeEngine whose log stream of a ``broken`` task fails, as a vanished task's does,
    and whose followed log of a ``quiet`` task, after its lines, holds its reader (as the
    engine's connection does while a task says nothing) until it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()
        self.quiet: set[str] = set()
        self.closed = threading.Event()

    def logs(self, task_id: str, *, tail: int | None = None, follow: bool = False) -> TaskLog:
        if task_id in self.broken:
            raise EngineError(f"no such container: {task_id}")
        log = super().logs(task_id, tail=tail, follow=follow)
        if not (follow and task_id in self.quiet):
            return log

        def held() -> Iterator[str]:
            yield from log
            self.closed.wait(30)  # nothing more until the reader lets go

        return TaskLog(held(), self.closed.set)


@dataclass
class Platform:
    services: Services
    client: TestClient
    engine: _Engine
    task: str


@pytest.fixture
def platform(tmp_path: Path, app_port: int) -> Iterator[Platform]:
    settings = Settings(data_dir=tmp_path, registry_port=5999)
    database = open_database(settings.database_url)
    migrate(database)
    sessions = session_factory(database)
    engine = _Engine()
    login_record = RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password")
    services = build_services(settings, sessions, login_record, engine=engine, router=FakeRouter())
    with sessions.begin() as session:
        stack = Stack(name=STACK, repo="/srv/shop", branch="main")
        session.add(stack)
        session.flush()
        session.add(
            Build(stack_id=stack.id, number=1, status="SUCCEEDED", digest=DIGEST, config=CONFIG)
        )
        session.add(
            Release(
                stack_id=stack.id,
                stage=STAGE,
                number=1,
                digest=DIGEST,
                build_number=1,
                config=config_snapshot(CONFIG, STAGE),
            )
        )
        session.add(
            Deployment(
                stack_id=stack.id,
                stage=STAGE,
                number=1,
                release_number=1,
                digest=DIGEST,
                status="COMPLETED",
                desired=1,
                log_path=str(tmp_path / "1.log"),
            )
        )
    task = engine.start(
        TaskSpec(
            name="shop-dev-1",
            image=f"{settings.registry_endpoint}/{STACK}@{DIGEST}",
            port=app_port,
            labels={
                LABEL_PLATFORM: services.controller.settings.platform_id,
                LABEL_STACK: STACK,
                LABEL_STAGE: STAGE,
                LABEL_RELEASE: "1",
                LABEL_PORT: str(app_port),
            },
        )
    )
    engine.set_health(task.id, Health.UNHEALTHY)  # the engine's view; HTTP says otherwise
    services.start()
    try:
        with TestClient(create_app(ApiContext(settings, TOKEN, {}, services))) as client:
            yield Platform(services, client, engine, task.id)
    finally:
        services.close()
        database.dispose()


def test_the_console_and_the_api_agree_on_a_stages_health(platform: Platform) -> None:
    api = platform.client
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"/api/v1/stacks/{STACK}/stages/{STAGE}"
    deadline = time.monotonic() + 15
    tasks: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        tasks = api.get(f"{base}/tasks", headers=headers).json()["tasks"]
        if tasks and all(t["health"] == "healthy" for t in tasks):
            break
        time.sleep(0.05)
    assert [t["health"] for t in tasks] == ["healthy"], "the stage loop never judged the task"
    check = api.get(f"{base}/check", headers=headers).json()

    [row] = platform.services.deploy.overview(only=STACK).stacks
    [cell] = row.stages
    serving = [t for t in tasks if t["state"] == "running" and t["health"] == "healthy"]
    assert (cell.desired, cell.running, cell.healthy) == (
        check["desired"],
        len(check["tasks"]),
        len(serving),
    )
    assert (cell.release, cell.digest) == (check["release"], check["digest"])
    assert cell.healthy == 1  # the HTTP check's verdict, not the engine's "unhealthy"

    answer = api.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    assert answer.status_code == 303
    fragment = api.get(f"/ui/fragments/stacks/{STACK}").text
    assert "1/1 healthy" in fragment


def test_task_logs_are_masked_and_a_failing_stream_says_why(platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    path = f"/api/v1/stacks/{STACK}/stages/{STAGE}/tasks/logs"
    platform.engine.emit(platform.task, "pushing with registry-password", "done")
    text = platform.client.get(path, headers=headers).text
    label = platform.task[:12]
    assert text.splitlines() == [f"[{label}] pushing with ***", f"[{label}] done"]

    platform.engine.broken.add(platform.task)
    text = platform.client.get(path, headers=headers).text
    assert text.splitlines() == [f"[{label}] (no more lines: no such container: {platform.task})"]


def test_a_follower_that_goes_away_lets_go_of_each_task_s_log(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A followed stage's log holds one engine connection per task for as long as the task
    # lives. A reader that goes away (a closed console page, a CLI stopped with Ctrl-C)
    # must let them go: its stream notices at the next keep-alive at the latest, and closes
    # every task's log, so its pump thread ends too.
    monkeypatch.setattr(logs_route, "HEARTBEAT", 0.1)
    platform.engine.emit(platform.task, "first")
    platform.engine.quiet.add(platform.task)
    request: Any = SimpleNamespace(app=platform.client.app)
    response = logs_route.task_logs(STACK, STAGE, request, tail=100, follow=True)

    async def read_two_then_leave(body: Any) -> list[str]:
        read = [await anext(body), await anext(body)]
        await body.aclose()  # what the server does when the client hangs up
        return read

    first, second = asyncio.run(read_two_then_leave(response.body_iterator))
    assert first == f'event: line\ndata: "[{platform.task[:12]}] first"\n\n'
    assert second == ": keep-alive\n\n"  # the task says nothing: the stream is kept alive
    del response
    gc.collect()
    assert platform.engine.closed.wait(5), "the task's log was never closed"
    deadline = time.monotonic() + 5
    while any(t.name.startswith("logs-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a log pump still runs"
        time.sleep(0.05)
