"""Record numbers stay distinct when writers race: threads, and processes on one file."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, MetaData, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from stackyard.store.database import alembic_config, migrate, open_database, session_factory
from stackyard.store.models import (
    Build,
    Deployment,
    PipelineRun,
    RecordCounter,
    Release,
    Stack,
)
from stackyard.store.numbers import next_number

THREADS = 4
EACH = 25


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    yield engine
    engine.dispose()


def add_stack(sessions: sessionmaker[Session], name: str = "app") -> int:
    with sessions.begin() as session:
        stack = Stack(name=name, repo="/srv/app")
        session.add(stack)
        session.flush()
        return stack.id


def add_build(session: Session, stack_id: int) -> int:
    number = next_number(session, Build, stack_id)
    session.add(Build(stack_id=stack_id, number=number, exported={}))
    return number


def test_numbers_count_per_stack_and_per_stage(database: Engine) -> None:
    sessions = session_factory(database)
    app, other = add_stack(sessions, "app"), add_stack(sessions, "other")
    with sessions.begin() as session:
        builds = [next_number(session, Build, app) for _ in range(3)]
        runs = [next_number(session, PipelineRun, app) for _ in range(2)]
        dev = [next_number(session, Release, app, "dev") for _ in range(2)]
        prod = next_number(session, Release, app, "prod")
        deployments = next_number(session, Deployment, app, "dev")
        elsewhere = next_number(session, Build, other)
        ignored_stage = next_number(session, Build, app, "dev")  # builds count per stack
    assert builds == [1, 2, 3]
    assert runs == [1, 2]
    assert dev == [1, 2]
    assert (prod, deployments, elsewhere, ignored_stage) == (1, 1, 1, 4)


def test_a_rolled_back_number_is_given_again(database: Engine) -> None:
    sessions = session_factory(database)
    app = add_stack(sessions)
    with sessions.begin() as session:
        assert add_build(session, app) == 1
    session = sessions()
    assert add_build(session, app) == 2
    session.rollback()
    session.close()
    with sessions.begin() as session:
        assert add_build(session, app) == 2


def test_counting_starts_after_records_numbered_without_a_counter(database: Engine) -> None:
    sessions = session_factory(database)
    app = add_stack(sessions)
    with sessions.begin() as session:
        session.add(Build(stack_id=app, number=41, exported={}))
    with sessions.begin() as session:
        assert next_number(session, Build, app) == 42


def test_a_deleted_stack_takes_its_counters_along(database: Engine) -> None:
    sessions = session_factory(database)
    app = add_stack(sessions)
    with sessions.begin() as session:
        add_build(session, app)
    with sessions.begin() as session:
        session.delete(session.get(Stack, app))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(RecordCounter)) == 0


def test_threads_that_race_get_distinct_numbers(database: Engine) -> None:
    sessions = session_factory(database)
    app = add_stack(sessions)
    start = threading.Barrier(THREADS)
    got: list[int] = []
    errors: list[BaseException] = []

    def allocate() -> None:
        try:
            start.wait(timeout=30)
            for _ in range(EACH):
                with sessions.begin() as session:
                    got.append(add_build(session, app))
        except BaseException as exc:  # reported below, with the numbers
            errors.append(exc)

    threads = [threading.Thread(target=allocate) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(got) == list(range(1, THREADS * EACH + 1))


def test_max_plus_one_collides_where_the_counter_does_not(database: Engine) -> None:
    """The failure the counter prevents: two writers both read the same highest number."""
    sessions = session_factory(database)
    app = add_stack(sessions)
    first, second = sessions(), sessions()
    highest = [s.scalar(select(func.max(Build.number)).where(Build.stack_id == app)) or 0
               for s in (first, second)]  # fmt: skip
    first.add(Build(stack_id=app, number=highest[0] + 1, exported={}))
    first.commit()
    second.add(Build(stack_id=app, number=highest[1] + 1, exported={}))
    with pytest.raises(IntegrityError):
        second.commit()
    second.rollback()
    # The same interleaving with the counter: the second writer waits for the first.
    ahead = threading.Event()
    numbers: list[int] = []

    def later() -> None:
        ahead.wait(timeout=30)
        with sessions.begin() as session:
            numbers.append(add_build(session, app))

    thread = threading.Thread(target=later)
    thread.start()
    numbers.append(add_build(first, app))
    ahead.set()  # the other writer now asks while this transaction still holds its number
    first.commit()
    thread.join(timeout=60)
    first.close()
    second.close()
    assert sorted(numbers) == [2, 3]


WRITER = """
import sys, time
from pathlib import Path
from stackyard.store.database import open_database, session_factory
from stackyard.store.models import Build
from stackyard.store.numbers import next_number

url, stack_id, go, count = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
sessions = session_factory(open_database(url))
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
for _ in range(count):
    with sessions.begin() as session:
        number = next_number(session, Build, stack_id)
        session.add(Build(stack_id=stack_id, number=number, exported={}))
        print(number, flush=True)
"""


def test_two_processes_on_one_sqlite_file_get_distinct_numbers(
    database: Engine, tmp_path: Path
) -> None:
    sessions = session_factory(database)
    app = add_stack(sessions)
    go = tmp_path / "go"
    url = database.url.render_as_string(hide_password=False)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(app), str(go), str(EACH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    outputs = []
    for writer in writers:
        try:
            out, err = writer.communicate(timeout=60)
        finally:
            writer.kill()  # only if it is still running
        assert writer.returncode == 0, err
        outputs.append([int(line) for line in out.split()])
    assert all(len(numbers) == EACH for numbers in outputs)
    assert sorted(outputs[0] + outputs[1]) == list(range(1, 2 * EACH + 1))


def test_the_migration_starts_counters_after_existing_records(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")  # the schema before record counters
    now = datetime.now(UTC)
    sessions = session_factory(engine)
    stack = {"id": 1, "name": "app", "repo": "/srv/app", "branch": "main", "context_dir": "."}
    empty = dict.fromkeys(("commit_sha", "log_path"), "")
    build = {**empty, "requested_ref": "", "status": "SUCCEEDED", "kind": "", "error": ""}
    release = {**empty, "digest": "sha256:d", "config": {}, "source": "", "created_by": ""}
    with engine.begin() as connection:
        # The tables as they were at 0006 (the models have columns added since).
        old = MetaData()
        old.reflect(connection)
        connection.execute(
            old.tables["stacks"].insert(),
            [{**stack, "dockerfile": "Dockerfile", "created_at": now, "updated_at": now}],
        )
        connection.execute(
            old.tables["builds"].insert(),
            [
                {**build, "stack_id": 1, "number": n, "exported": {}, "created_at": now}
                for n in (1, 2, 7)
            ],
        )
        connection.execute(
            old.tables["releases"].insert(),
            [
                {**release, "stack_id": 1, "stage": stage, "number": n, "created_at": now}
                for stage, n in (("dev", 1), ("dev", 3), ("prod", 1))
            ],
        )
    migrate(engine)
    with sessions.begin() as session:
        assert next_number(session, Build, 1) == 8
        assert next_number(session, Release, 1, "dev") == 4
        assert next_number(session, Release, 1, "prod") == 2
        assert next_number(session, PipelineRun, 1) == 1
    engine.dispose()
