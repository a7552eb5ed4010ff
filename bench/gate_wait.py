"""What pipeline runs waiting at an approval gate cost the control plane while they wait.

N stacks each have one run that built and deployed dev and staging and now waits at
prod's approval gate (records written as a restart finds them; fake engine and router,
so only the pipeline's threads run). The runs are resumed, then the process's CPU time
is measured over an idle window. Usage:
    .venv/bin/python -m bench.gate_wait [--runs 20] [--seconds 10] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select, text

from bench.report import update_section
from stackyard.engines.fake import FakeEngine
from stackyard.pipeline.services import Services, build_services
from stackyard.registry_login import RegistryLogin
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.stacks.service import StackChanges
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, PipelineRun, PipelineStep, Stack

DIGEST = "sha256:" + "b" * 64
CONFIG = {
    "stages": [{"name": "dev"}, {"name": "staging"}, {"name": "prod", "promotion": "approval"}]
}
STEPS = [  # (kind, stage, status, message) after the build step
    ("gate", "dev", "SUCCEEDED", "auto"),
    ("release", "dev", "SUCCEEDED", ""),
    ("deploy", "dev", "SUCCEEDED", ""),
    ("gate", "staging", "SUCCEEDED", "auto"),
    ("release", "staging", "SUCCEEDED", ""),
    ("deploy", "staging", "SUCCEEDED", ""),
    ("gate", "prod", "PENDING", "approval"),
    ("release", "prod", "PENDING", ""),
    ("deploy", "prod", "PENDING", ""),
]


def at_the_gate(database: Engine, services: Services, settings: Settings, name: str) -> None:
    """Plain rows (no status enums), so the same script measures older versions too."""
    services.stacks.create(name, StackChanges(repo="https://example.com/app.git"))
    now = datetime.now(UTC)
    with database.begin() as connection:
        stack_id = connection.scalar(select(Stack.id).where(Stack.name == name))
        connection.execute(
            Build.__table__.insert(),
            [{"stack_id": stack_id, "number": 1, "status": "SUCCEEDED", "digest": DIGEST,
              "config": CONFIG, "exported": {}, "commit_sha": "", "requested_ref": "",
              "kind": "", "log_path": "", "error": "", "created_at": now}],
        )  # fmt: skip
        log_path = settings.logs_dir / "runs" / name / "1.log"
        connection.execute(
            PipelineRun.__table__.insert(),
            [{"stack_id": stack_id, "number": 1, "status": "RUNNING", "ref": "", "trigger": "",
              "commit_sha": "", "before_sha": "", "source_url": "", "error": "",
              "log_path": str(log_path), "created_at": now}],
        )  # fmt: skip
        run_id = connection.scalar(select(PipelineRun.id).where(PipelineRun.stack_id == stack_id))
        rows = [("build", "", "SUCCEEDED", DIGEST), *STEPS]
        connection.execute(
            PipelineStep.__table__.insert(),
            [{"run_id": run_id, "position": position, "kind": kind, "stage": stage,
              "status": status, "message": message,
              "number": None if kind == "gate" else 1}
             for position, (kind, stage, status, message) in enumerate(rows)],
        )  # fmt: skip


def waiting(database: Engine) -> int:
    with database.connect() as connection:
        query = text("SELECT count(*) FROM pipeline_runs WHERE status = 'WAITING'")
        return int(connection.scalar(query) or 0)


def measure(runs: int, seconds: float) -> float:
    """Percent of one core the process used while ``runs`` runs waited at their gate."""
    with tempfile.TemporaryDirectory(prefix="stackyard-gate-") as scratch:
        settings = Settings(data_dir=Path(scratch))
        database = open_database(settings.database_url)
        migrate(database)
        services = build_services(
            settings,
            session_factory(database),
            RegistryLogin(settings.registry_endpoint, "stackyard", "bench-password"),
            engine=FakeEngine(),
            router=FakeRouter(),
        )
        try:
            for index in range(runs):
                at_the_gate(database, services, settings, f"app-{index:03d}")
            services.runs.resume_interrupted()
            deadline = time.monotonic() + 60
            while waiting(database) < runs and time.monotonic() < deadline:
                time.sleep(0.05)
            if waiting(database) < runs:
                raise SystemExit(f"only {waiting(database)} of {runs} runs reached the gate")
            time.sleep(1.0)  # let the runs settle into their wait
            started_cpu, started = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu = time.process_time() - started_cpu
            wall = time.monotonic() - started
        finally:
            services.runs.shutdown()
            database.dispose()
    return 100 * cpu / wall


def report(runs: int, seconds: float, percent: float) -> str:
    return (
        "## Runs waiting at an approval gate\n\n"
        f"`bench/gate_wait.py`: {runs} pipeline runs (one per stack) wait at prod's approval "
        f"gate; the control plane's CPU over {seconds:g} s of waiting (fake engine and "
        "router, so only the pipeline's threads run):\n\n"
        "| runs waiting | control-plane CPU |\n|---|---|\n"
        f"| {runs} | {percent:.2f}% of one core |\n\n"
        "Before runs waited on a change signal (each polled its gate every 0.1 s), the same "
        "measure gave 32-38% of one core for 20 runs.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    body = report(args.runs, args.seconds, measure(args.runs, args.seconds))
    print(body)
    if not args.no_write:
        update_section("gate-wait", body)


if __name__ == "__main__":
    main()
