"""Backup files without a running platform: what one holds, a restore into a fresh data
directory (records' paths moved, remotes made again), and every backup a restore refuses."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from stackyard.errors import UsageError
from stackyard.images.dockerproxy.server import NAMES_FILE
from stackyard.platform.backup import MANIFEST, read_manifest, write_backup
from stackyard.platform.restore import restore_backup
from stackyard.settings import Settings
from stackyard.source.remote import HostedRemotes
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Build, Stack

IDENTITY = ["-c", "user.name=t", "-c", "user.email=t@stackyard.invalid"]


def make_data_dir(data_dir: Path) -> None:
    """A stopped platform's data directory: state, secret files, a log, a pushed remote."""
    data_dir.mkdir(mode=0o700)
    engine = open_database(f"sqlite:///{data_dir / 'stackyard.db'}")
    migrate(engine)
    log = data_dir / "logs" / "builds" / "shop" / "1.log"
    log.parent.mkdir(parents=True)
    log.write_text("build SUCCEEDED\n")
    with session_factory(engine).begin() as session:
        stack = Stack(name="shop", repo="/src/shop")
        session.add(stack)
        session.flush()
        session.add(
            Build(stack_id=stack.id, number=1, log_path=str(log), created_at=datetime.now(UTC))
        )
    engine.dispose()
    for name in ("secrets.key", "token-pepper", "admin-token", "platform-id", NAMES_FILE):
        (data_dir / name).write_text(f"{name}-value\n")
        (data_dir / name).chmod(0o600)
    for log in ("platform.log", "dataplane.log", "caddy-1.log", "registry.log.1"):
        (data_dir / "logs" / log).write_text("this machine's own log\n")
    # The data plane's runtime files: its record, upstream table, a Caddy's saved config.
    run = data_dir / "run"
    (run / "caddy-1" / "config" / "caddy").mkdir(parents=True)
    (run / "dataplane.json").write_text('{"pid": 1}')
    (run / "upstreams.json").write_text("{}")
    (run / "caddy-1" / "config" / "caddy" / "autosave.json").write_text("{}")
    remote = HostedRemotes(data_dir / "remotes").ensure("shop", "main")
    work = data_dir.parent / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(
        ["git", *IDENTITY, "-C", str(work), "commit", "-q", "--allow-empty", "-m", "one"],
        check=True,
    )
    subprocess.run(["git", "-C", str(work), "push", "-q", str(remote), "main"], check=True)


def test_a_backup_restores_into_a_fresh_data_directory_with_paths_moved(tmp_path: Path) -> None:
    old = tmp_path / "old"
    make_data_dir(old)
    result = write_backup(Settings(data_dir=old), tmp_path / "b.tar")
    assert result.manifest.stacks == ["shop"]
    assert result.manifest.remotes == {"shop": "refs/heads/main"}
    assert result.manifest.schema_revision is not None
    with tarfile.open(tmp_path / "b.tar") as tar:
        names = tar.getnames()
    assert names[0] == MANIFEST
    for log in ("platform.log", "dataplane.log", "caddy-1.log", "registry.log.1"):
        assert f"logs/{log}" not in names
    assert not [name for name in names if name.startswith("run/")]
    assert "logs/builds/shop/1.log" in names

    new = tmp_path / "new"
    restore_backup(tmp_path / "b.tar", Settings(data_dir=new))
    assert (new / "secrets.key").read_text() == "secrets.key-value\n"
    assert (new / "token-pepper").read_text() == "token-pepper-value\n"  # people's tokens
    # Which stack's build named which local image: a build re-tagging its own name after
    # a restore on the same machine is not refused as another stack's.
    assert (new / NAMES_FILE).read_text() == f"{NAMES_FILE}-value\n"
    assert (new / "admin-token").stat().st_mode & 0o777 == 0o600
    assert new.stat().st_mode & 0o777 == 0o700
    engine = open_database(f"sqlite:///{new / 'stackyard.db'}")
    with session_factory(engine)() as session:
        [log_path] = session.scalars(select(Build.log_path))
    engine.dispose()
    assert log_path == str(new / "logs" / "builds" / "shop" / "1.log")
    assert Path(log_path).read_text() == "build SUCCEEDED\n"
    remote = new / "remotes" / "shop.git"
    log = subprocess.run(
        ["git", f"--git-dir={remote}", "log", "--format=%s", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert log.stdout.strip() == "one"
    assert (
        subprocess.run(
            ["git", f"--git-dir={remote}", "config", "http.receivepack"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        == "true"
    )
    assert not list(tmp_path.glob(".new.restoring-*"))


def backup_with(tmp_path: Path, manifest: dict[str, object], *extra: tuple[str, bytes]) -> Path:
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in ((MANIFEST, json.dumps(manifest).encode()), *extra):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


MANIFEST_V1 = {
    "format": 1,
    "stackyard_version": "0.1.0",
    "schema_revision": "0001",
    "created_at": "2026-01-01T00:00:00+00:00",
    "data_dir": "/old",
    "images": False,
}


def test_a_backup_in_a_newer_format_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = backup_with(tmp_path, {**MANIFEST_V1, "format": 2, "stackyard_version": "9.0"})
    with pytest.raises(UsageError, match=r"format 2, written by Stackyard 9\.0") as caught:
        restore_backup(path, Settings(data_dir=tmp_path / "new"))
    assert "9.0 or a newer one" in (caught.value.hint or "")
    assert not (tmp_path / "new").exists()


def test_state_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = backup_with(tmp_path, {**MANIFEST_V1, "schema_revision": "0999"})
    with pytest.raises(UsageError, match="schema revision 0999"):
        restore_backup(path, Settings(data_dir=tmp_path / "new"))


def test_a_file_that_is_no_backup_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(UsageError, match="is not a Stackyard backup"):
        read_manifest(other)
    tar = tmp_path / "other.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(other, "notes.txt")
    with pytest.raises(UsageError, match=r"first member is not stackyard-backup\.json"):
        read_manifest(tar)


def test_a_member_that_would_leave_the_data_directory_is_refused(tmp_path: Path) -> None:
    path = backup_with(tmp_path, MANIFEST_V1, ("../escaped", b"x"))
    with pytest.raises(UsageError, match="cannot unpack"):
        restore_backup(path, Settings(data_dir=tmp_path / "new"))
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "new").exists()


def test_a_restore_goes_only_into_an_empty_data_directory(tmp_path: Path) -> None:
    path = backup_with(tmp_path, MANIFEST_V1)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "stackyard.db").write_text("")
    with pytest.raises(UsageError, match="is not empty"):
        restore_backup(path, Settings(data_dir=taken))


def test_a_backup_is_not_written_inside_the_data_directory(tmp_path: Path) -> None:
    make_data_dir(tmp_path / "d")
    with pytest.raises(UsageError, match="inside the data directory"):
        write_backup(Settings(data_dir=tmp_path / "d"), tmp_path / "d" / "b.tar")
