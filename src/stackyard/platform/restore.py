"""``stackyard restore``: a backup file into a fresh data directory.

The file's manifest is read and checked first (its format, and a schema revision this
Stackyard knows); then every member is unpacked into a new folder beside the data
directory, the git remotes are made again from their bundles, the database is migrated
to this Stackyard's schema and the record paths in it are moved to the new data
directory, and only then the folder takes the data directory's name. A restore that fails
leaves no data directory behind. The next ``stackyard up`` starts the stages from their
recorded releases.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import String, func, literal, update

from stackyard.errors import UsageError
from stackyard.platform.backup import (
    DATABASE,
    GIT_TIMEOUT,
    MANIFEST,
    PLATFORM_FILES,
    REMOTES,
    BackupManifest,
    read_manifest,
)
from stackyard.platform.credentials import ensure_registry_login, write_htpasswd
from stackyard.platform.state import running_state
from stackyard.settings import Settings
from stackyard.source.remote import create_remote_argv, run_git
from stackyard.store.database import known_revisions, migrate, open_database, session_factory
from stackyard.store.models import Build, Deployment, PipelineRun, Release

PATH_COLUMNS = (
    Build.log_path,
    Release.log_path,
    Deployment.log_path,
    PipelineRun.log_path,
    PipelineRun.source_url,
)
"""Columns that hold a path inside the data directory."""


@dataclass(frozen=True)
class RestoreResult:
    data_dir: Path
    manifest: BackupManifest
    seconds: float


def check_restorable(manifest: BackupManifest, source: str) -> None:
    """Refuse a backup whose schema this Stackyard does not know (a newer Stackyard's)."""
    known = known_revisions()
    if manifest.schema_revision is not None and manifest.schema_revision not in known:
        raise UsageError(
            f"{source} holds state at schema revision {manifest.schema_revision}, written by "
            f"Stackyard {manifest.stackyard_version}; this Stackyard knows revisions up to "
            f"{known[-1]}",
            hint=f"restore it with Stackyard {manifest.stackyard_version} or newer",
        )


def check_target(data_dir: Path) -> None:
    """The data directory must be new or empty, and no platform may run there."""
    if running_state(data_dir / "platform.json") is not None:
        raise UsageError(
            f"a Stackyard is running for {data_dir}", hint="restore into a fresh data directory"
        )
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise UsageError(
            f"{data_dir} is not empty: a restore goes into a fresh data directory",
            hint="name a new one with --data-dir (or move this one away first)",
        )


def restore_backup(backup: Path, settings: Settings) -> RestoreResult:
    started = time.monotonic()
    data_dir = settings.data_dir.absolute()
    manifest = read_manifest(backup)
    check_restorable(manifest, str(backup))
    check_target(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restoring-", dir=data_dir.parent))
    try:
        _unpack(backup, staging)
        _make_remotes(staging, manifest)
        _fix_modes(staging)
        if (staging / "registry-credentials.json").is_file():
            login = ensure_registry_login(
                staging / "registry-credentials.json", settings.registry_endpoint
            )
            write_htpasswd(staging / "registry" / "htpasswd", login)
        _move_paths(staging / DATABASE, manifest.data_dir, data_dir)
        if data_dir.exists():
            data_dir.rmdir()  # empty, checked above
        staging.rename(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RestoreResult(data_dir, manifest, time.monotonic() - started)


def _unpack(backup: Path, staging: Path) -> None:
    """Every member but the manifest; names that would leave the folder, links and
    devices are refused (tarfile's ``data`` filter)."""
    try:
        with tarfile.open(backup, "r:*") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                tar.extract(member, staging, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"{backup}: cannot unpack: {exc}") from exc
    if not (staging / DATABASE).is_file():
        raise UsageError(f"{backup} holds no {DATABASE}: it is not a complete backup")


def _make_remotes(staging: Path, manifest: BackupManifest) -> None:
    """Each stack's bare repository, made as the platform makes one, then filled from its
    bundle, its HEAD as it was."""
    remotes = staging / REMOTES
    for stack, head in sorted(manifest.remotes.items()):
        bundle = remotes / f"{stack}.bundle"
        repository = remotes / f"{stack}.git"
        op = f"restore the git remote of stack {stack!r}"
        for argv in create_remote_argv(repository):
            run_git(argv, op)
        git_dir = f"--git-dir={repository}"
        fetch = ["git", git_dir, "fetch", "--quiet", str(bundle), "+refs/*:refs/*"]
        run_git(fetch, op, timeout=GIT_TIMEOUT)
        run_git(["git", git_dir, "symbolic-ref", "HEAD", head], op)
        bundle.unlink()


def _fix_modes(staging: Path) -> None:
    staging.chmod(0o700)
    for name in (*PLATFORM_FILES, DATABASE):
        path = staging / name
        if path.exists():
            path.chmod(0o600)


def _move_paths(database: Path, old: str, new: Path) -> None:
    """Migrate the restored database to this Stackyard's schema, then point the records'
    log paths (and the runs' remote paths) at the new data directory."""
    engine = open_database(f"sqlite:///{database}")
    try:
        migrate(engine)
        if old.rstrip("/") == str(new):
            return
        prefix = old.rstrip("/") + "/"
        moved = literal(f"{new}/", String)
        sessions = session_factory(engine)
        with sessions.begin() as session:
            for column in PATH_COLUMNS:
                session.execute(
                    update(column.class_)
                    .where(column.startswith(prefix, autoescape=True))
                    .values({column.key: moved.concat(func.substr(column, len(prefix) + 1))})
                )
    finally:
        engine.dispose()
