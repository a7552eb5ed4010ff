"""Console render time, server side: the stacks page and a stack page with 50 stacks x 3 stages.

Seeds a SQLite store through the models (builds, releases, deployments, pipeline runs) and
a FakeEngine with two to three tasks per stage, builds the real app with those fakes, logs
in, then times each page through Starlette's TestClient. The goal is under 100 ms a page.
``tests/unit/test_console.py`` uses the same seed (``console_yard``) on a smaller store.
Usage:
    .venv/bin/python -m bench.console_render [--stacks 50] [--renders 30] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bench.report import update_section
from stackyard.api.app import ApiContext, create_app
from stackyard.engines.base import (
    LABEL_PLATFORM,
    LABEL_RELEASE,
    LABEL_STACK,
    LABEL_STAGE,
    Health,
    TaskSpec,
)
from stackyard.engines.fake import FakeEngine
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import (
    Build,
    Deployment,
    PipelineRun,
    PipelineStep,
    Release,
    Stack,
)

TOKEN = "console-bench-token"
STAGES = ("dev", "staging", "prod")
REGISTRY = "127.0.0.1:5999"


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def stack_name(index: int) -> str:
    return f"app-{index:02d}"


def seed(
    sessions: sessionmaker[Session],
    engine: FakeEngine,
    platform_id: str,
    logs_dir: Path,
    *,
    stacks: int,
    runs: int = 3,
) -> None:
    """``stacks`` stacks, each built twice and deployed on dev, staging and prod (prod one
    release behind, its run waiting at the gate), with running tasks in the engine."""
    now = datetime.now(UTC) - timedelta(hours=1)
    with sessions.begin() as session:
        for index in range(stacks):
            name = stack_name(index)
            stack = Stack(name=name, repo=f"/srv/git/{name}", branch="main")
            session.add(stack)
            session.flush()
            shas = [hashlib.sha1(f"{name}-{n}".encode()).hexdigest() for n in (1, 2)]  # noqa: S324
            digests = [digest_of(sha) for sha in shas]
            config = {"stages": [{"name": stage} for stage in STAGES]}
            for number, (sha, digest) in enumerate(zip(shas, digests, strict=True), start=1):
                session.add(
                    Build(
                        stack_id=stack.id,
                        number=number,
                        commit_sha=sha,
                        status="SUCCEEDED",
                        digest=digest,
                        config=config,
                        log_path=str(logs_dir / "builds" / name / f"{number}.log"),
                        created_at=now,
                    )
                )
            for stage in STAGES:
                shipped = 1 if stage == "prod" else 2
                _ship(session, stack.id, name, stage, shas[:shipped], digests[:shipped], now)
                _tasks(engine, platform_id, name, stage, digests[shipped - 1])
            for number in range(1, runs + 1):
                _run(session, stack.id, name, number, shas[-1], now, logs_dir, last=number == runs)


def _ship(
    session: Session,
    stack_id: int,
    name: str,
    stage: str,
    shas: list[str],
    digests: list[str],
    now: datetime,
) -> None:
    replicas = 2 if stage == "prod" else 1
    for number, (sha, digest) in enumerate(zip(shas, digests, strict=True), start=1):
        session.add(
            Release(
                stack_id=stack_id,
                stage=stage,
                number=number,
                digest=digest,
                commit_sha=sha,
                build_number=number,
                config={"stage": {"name": stage, "replicas": replicas}, "variables": {}},
                source="pipeline",
                created_by="bench",
                created_at=now,
            )
        )
        session.add(
            Deployment(
                stack_id=stack_id,
                stage=stage,
                number=number,
                release_number=number,
                digest=digest,
                status="COMPLETED",
                trigger="pipeline",
                desired=replicas,
                tasks_started=replicas,
                tasks_healthy=replicas,
                tasks_routed=replicas,
                log_path=f"/nonexistent/deployments/{name}/{stage}/{number}.log",
                created_at=now,
            )
        )


def _tasks(engine: FakeEngine, platform_id: str, name: str, stage: str, digest: str) -> None:
    for replica in range(2 if stage == "prod" else 1):
        task = engine.start(
            TaskSpec(
                name=f"{name}-{stage}-{replica}",
                image=f"{REGISTRY}/{name}@{digest}",
                port=40000 + replica,
                labels={
                    LABEL_PLATFORM: platform_id,
                    LABEL_STACK: name,
                    LABEL_STAGE: stage,
                    LABEL_RELEASE: "1",
                },
            )
        )
        engine.set_health(task.id, Health.HEALTHY)


def _run(
    session: Session,
    stack_id: int,
    name: str,
    number: int,
    sha: str,
    now: datetime,
    logs_dir: Path,
    *,
    last: bool,
) -> None:
    run = PipelineRun(
        stack_id=stack_id,
        number=number,
        ref="main",
        commit_sha=sha,
        trigger="git push",
        status="WAITING" if last else "SUPERSEDED",
        log_path=str(logs_dir / "runs" / name / f"{number}.log"),
        created_at=now,
    )
    session.add(run)
    session.flush()
    steps = [("build", "", "SUCCEEDED")]
    for stage in STAGES:
        waiting = stage == "prod"
        steps += [
            ("gate", stage, "WAITING" if waiting and last else "SUCCEEDED"),
            ("release", stage, "PENDING" if waiting else "SUCCEEDED"),
            ("deploy", stage, "PENDING" if waiting else "SUCCEEDED"),
        ]
    for position, (kind, stage, status) in enumerate(steps):
        session.add(
            PipelineStep(
                run_id=run.id,
                position=position,
                kind=kind,
                stage=stage,
                status=status,
                number=None if status == "PENDING" or kind == "gate" else 1,
            )
        )


@dataclass
class ConsoleYard:
    """The real app over a seeded store and fakes, with a logged-in TestClient."""

    client: TestClient
    services: Services
    engine: FakeEngine
    sessions: sessionmaker[Session]


@contextmanager
def console_yard(
    directory: Path, *, stacks: int, engine: FakeEngine | None = None
) -> Iterator[ConsoleYard]:
    """The app over a store seeded with ``stacks`` stacks, their tasks on ``engine`` (a
    FakeEngine unless given: a FakeSwarm for the cluster's pages)."""
    settings = Settings(data_dir=directory, registry_port=5999)
    database = open_database(settings.database_url)
    migrate(database)
    sessions = session_factory(database)
    engine = engine if engine is not None else FakeEngine()
    registry = RegistryLogin(settings.registry_endpoint, "stackyard", "registry-password")
    services = build_services(settings, sessions, registry, engine=engine, router=FakeRouter())
    seed(
        sessions, engine, services.controller.settings.platform_id, settings.logs_dir, stacks=stacks
    )
    app = create_app(ApiContext(settings, TOKEN, {}, services))
    try:
        with TestClient(app) as client:
            yield ConsoleYard(client, services, engine, sessions)
    finally:
        services.close()
        database.dispose()


def login(client: TestClient) -> None:
    response = client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    if response.status_code != 303:
        raise RuntimeError(f"login failed: {response.status_code} {response.text[:200]}")


def time_page(client: TestClient, path: str, renders: int) -> list[float]:
    client.get(path).raise_for_status()  # warm up: templates compile, caches fill
    times = []
    for _ in range(renders):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stacks", type=int, default=50)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, console_yard(Path(tmp), stacks=args.stacks) as yard:
        login(yard.client)
        pages = {
            "stacks page `/ui/`": "/ui/",
            "stacks fragment (polled)": "/ui/fragments/stacks",
            f"stack page `/ui/stacks/{stack_name(0)}`": f"/ui/stacks/{stack_name(0)}",
            "stack fragment (polled)": f"/ui/fragments/stacks/{stack_name(0)}",
        }
        engine_calls = len(yard.engine.calls_to("list"))
        yard.client.get("/ui/")
        per_page = len(yard.engine.calls_to("list")) - engine_calls
        rows = []
        for label, path in pages.items():
            times = time_page(yard.client, path, args.renders)
            p95 = statistics.quantiles(times, n=20)[18]
            rows.append(f"| {label} | {statistics.median(times):.1f} | {p95:.1f} |")
            print(f"{label:45s} median {statistics.median(times):6.1f} ms   p95 {p95:6.1f} ms")
    body = "\n".join(
        [
            "## Console render time (server side)",
            "",
            f"{args.stacks} stacks x {len(STAGES)} stages (releases, deployments, "
            f"{3} runs per stack, 4 tasks per stack in a FakeEngine), SQLite; "
            f"{args.renders} renders per page through TestClient after one warm-up. "
            "Goal: under 100 ms per page.",
            "",
            "| page | median ms | p95 ms |",
            "|---|---:|---:|",
            *rows,
            "",
            f"Engine calls per stacks page: {per_page} (one list of the platform's tasks).",
            "",
            "Reproduce: `.venv/bin/python -m bench.console_render`.",
        ]
    )
    print(f"engine list calls per stacks page: {per_page}")
    if not args.no_write:
        update_section("console_render", body)


if __name__ == "__main__":
    main()
