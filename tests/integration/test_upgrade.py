"""`stackyard upgrade`: the database migrates forward, a failed migration changes nothing,
and an upgrade from the previous commit's version fails no request.

The "other" version is real code: the previous commit's ``src`` from git, or this tree with
one migration added that fails; it runs with ``PYTHONPATH`` in front of this one, on the
same Python and dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import time
from io import BytesIO
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from stackyard.platform.dataplane import dataplane_status
from stackyard.platform.keeper import FEATURES
from stackyard.platform.state import pid_alive
from stackyard.settings import Settings
from stackyard.store.database import alembic_config

from .conftest import STACKYARD, RunningPlatform, free_port, start_platform, stop_platform
from .gitrepo import GitRepo
from .test_dataplane import CONNECTIONS, load_on, no_failure, pipeline_stack, tasks_of
from .test_deployments import new_stack as new_dev_stack
from .test_deployments import ship, stage_url, version_served, wait_converged
from .test_pipelines import run_record, wait_run
from .wrk import WrkResult

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
# The version to upgrade from: a git revision of this repository.
UPGRADE_FROM = os.environ.get("STACKYARD_UPGRADE_FROM", "HEAD~1")
FAILING = '''\
"""A migration that fails, as a broken release's would."""

revision = "9999_fails"
down_revision = "{head}"


def upgrade() -> None:
    raise RuntimeError("deliberately broken migration 9999_fails")


def downgrade() -> None:
    pass
'''


def dump(database: Path) -> list[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        lines = list(connection.iterdump())
    connection.close()
    return lines


def with_failing_migration(tmp_path: Path) -> Path:
    """This tree's ``src`` plus one migration that raises: the "new version"."""
    copy = tmp_path / "broken" / "src"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    versions = copy / "stackyard" / "store" / "migrations" / "versions"
    (versions / "9999_fails.py").write_text(FAILING.format(head=head))
    return copy


def previous_version(tmp_path: Path) -> Path:
    """The ``src`` of UPGRADE_FROM, from git."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", UPGRADE_FROM, "src"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        pytest.fail(
            f"cannot read {UPGRADE_FROM} from git ({archive.stderr.decode().strip()}): this "
            "test needs the repository's history (a full clone, not --depth 1), or "
            "STACKYARD_UPGRADE_FROM naming a revision it has"
        )
    target = tmp_path / "previous"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def upgrade(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STACKYARD, "upgrade", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_a_failing_migration_leaves_the_old_version_running_and_the_data_as_it_was(
    tmp_path: Path,
) -> None:
    yard = start_platform(tmp_path / "data")
    try:
        repo = GitRepo.from_example("hello", tmp_path / "kept")
        yard.cli("stacks", "create", "kept", "--repo", str(repo.path))
        database = yard.data_dir / "stackyard.db"
        before = dump(database)
        broken = {**yard.env, "PYTHONPATH": str(with_failing_migration(tmp_path))}
        result = upgrade(broken)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "migrations fail on a copy" in result.stderr
        assert "deliberately broken migration 9999_fails" in result.stderr
        assert "nothing was changed" in result.stderr
        assert "Traceback" not in result.stderr
        assert pid_alive(yard.pid)
        assert json.loads((yard.data_dir / "platform.json").read_text())["pid"] == yard.pid
        assert json.loads(yard.cli("stacks", "list", "--json").stdout)[0]["name"] == "kept"
        assert dump(database) == before
        assert not list((yard.data_dir / "run").glob("upgrade-trial*"))
    finally:
        stop_platform(yard)


def upgrade_under_load(
    tmp_path: Path, old_src: Path, new_src: Path | None
) -> tuple[RunningPlatform, WrkResult, dict[str, object], bool]:
    """Start the version in ``old_src``, a stage under wrk and a run waiting at a gate;
    upgrade to ``new_src`` (None: this tree) while the load runs. The platform (on the
    new version), the load's result, the upgrade's report, and whether it was legacy."""
    legacy = "caddy_admin_port" in (old_src / "stackyard" / "settings.py").read_text()
    options = ("--caddy-admin-port", str(free_port())) if legacy else ()
    yard = start_platform(tmp_path / "data", {"PYTHONPATH": str(old_src)}, options)
    new_env = {k: v for k, v in yard.env.items() if k != "PYTHONPATH"}
    if new_src is not None:
        new_env["PYTHONPATH"] = str(new_src)
    try:
        new_dev_stack(yard, tmp_path, "steady", replicas=2)
        ship(yard, "steady")
        pipeline_stack(yard, tmp_path, "gated")
        run = json.loads(yard.cli("deploy", "gated", "--json", timeout=300).stdout)
        assert run["status"] == "WAITING"
        url = stage_url(yard, "steady")
        tasks = tasks_of(yard, "steady")
        old_pid = yard.pid
        with load_on(url) as load:
            time.sleep(1.5)
            result = upgrade(new_env)
            yard.env = new_env  # from here on, the new version's CLI
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout)
            yard.pid = report["new_pid"]
            wait_converged(yard, "steady", timeout=120)
            time.sleep(1.0)
            outcome = load.stop()
        assert report["old_pid"] == old_pid
        assert report["legacy"] == legacy
        assert not pid_alive(old_pid)
        assert tasks_of(yard, "steady") == tasks  # no task restarted
        assert version_served(url) == "v1"
        assert yard.dataplane["registry_mode"] == "read-write"
        # A keeper of an earlier version (without the operations this one relies on) was
        # replaced; its components were adopted (no task restarted, above).
        keeper = dataplane_status(Settings(data_dir=yard.data_dir))
        assert keeper is not None
        assert set(FEATURES) <= set(keeper["features"]), keeper
        # The run that waited at its gate across the upgrade goes on when approved.
        assert run_record(yard, "gated", 1)["status"] == "WAITING"
        yard.cli("approve", "gated", "--stage", "prod")
        done = wait_run(yard, "gated", 1, ("SUCCEEDED", "FAILED"))
        assert done["status"] == "SUCCEEDED", done
        return yard, outcome, report, legacy
    except BaseException:
        yard.env = new_env
        stop_platform(yard)
        raise


def test_upgrade_of_a_running_data_plane_fails_no_request(tmp_path: Path) -> None:
    """This version to a copy of itself: the data plane is adopted, nothing restarts but
    the control plane, and no request fails."""
    copy = tmp_path / "next" / "src"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    yard, outcome, _report, _legacy = upgrade_under_load(tmp_path, SRC, copy)
    try:
        no_failure(outcome)
    finally:
        stop_platform(yard)


def test_upgrade_from_the_previous_commit_under_load(tmp_path: Path) -> None:
    """From UPGRADE_FROM to this tree. From a version without a data plane, the old Caddy
    has to stop: closing its idle keep-alive connections races with requests clients are
    sending on them (wrk does not retry those; browsers and HTTP libraries do), so up to
    one request per connection may fail there, and none anywhere else."""
    yard, outcome, _report, legacy = upgrade_under_load(tmp_path, previous_version(tmp_path), None)
    try:
        assert outcome.requests > 50, outcome.raw
        assert outcome.non2xx == 0, outcome.raw
        assert outcome.errors <= (CONNECTIONS if legacy else 0), outcome.raw
    finally:
        stop_platform(yard)
