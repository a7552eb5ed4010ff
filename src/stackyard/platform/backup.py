"""``stackyard backup``: one tar file with everything a platform needs to come back.

Taken while the platform runs, in an order that keeps the parts consistent with each
other: the state database first (SQLite's online backup API: one consistent snapshot
while the control plane writes), then the git remotes (``git bundle``: git reads the refs,
then packs what they reach), then, under the registry maintenance lock (no garbage
collection meanwhile), the registry's links, then its blobs. Every image the snapshot's
releases name was pushed before its release was recorded, and a blob is written before
any link names it, so every link copied finds its blob. The platform's own secret files
(the secrets key, the admin token, the registry login, the platform id) and the records'
logs come along. The first member, ``stackyard-backup.json``, says what the file holds.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from stackyard import __version__
from stackyard.errors import ComponentError, UsageError
from stackyard.images.dockerproxy.server import NAMES_FILE
from stackyard.platform import registry_storage
from stackyard.platform.maintenance import registry_maintenance
from stackyard.settings import Settings
from stackyard.source.remote import run_git
from stackyard.store.database import open_database, schema_revision
from stackyard.store.models import Release, Secret, Stack

FORMAT = 1
"""The layout of the backup file; a Stackyard reads the formats up to its own."""
MANIFEST = "stackyard-backup.json"
DATABASE = "stackyard.db"
SECRET_FILES = ("secrets.key", "token-pepper", "admin-token", "registry-credentials.json")
"""The data directory's secret files (mode 0600)."""
PLATFORM_FILES = (*SECRET_FILES, "platform-id", NAMES_FILE)
"""The data directory's own secret and identity files, and the build proxy's record of
which stack named which local image, restored as they were."""
REMOTES = "remotes"
REGISTRY = "registry"
LOGS = "logs"
GIT_TIMEOUT = 600.0


@dataclass
class BackupManifest:
    """What a backup holds; the first member of the file, as JSON."""

    format: int
    stackyard_version: str
    schema_revision: str | None
    created_at: str
    data_dir: str  # where it was taken: restored record paths are moved from here
    images: bool
    stacks: list[str] = field(default_factory=list)
    releases: int = 0
    secrets: int = 0
    platform_files: list[str] = field(default_factory=list)
    remotes: dict[str, str] = field(default_factory=dict)  # stack -> its HEAD ref
    registry_files: int = 0
    registry_bytes: int = 0
    log_files: int = 0

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, source: str) -> BackupManifest:
        try:
            record = json.loads(data)
            fmt = int(record["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{source}: {MANIFEST} is not a Stackyard backup manifest") from exc
        if fmt > FORMAT:
            raise UsageError(
                f"{source} is a backup in format {fmt}, written by Stackyard "
                f"{record.get('stackyard_version', '?')}; this Stackyard ({__version__}) reads "
                f"formats up to {FORMAT}",
                hint=f"restore it with Stackyard {record.get('stackyard_version', '?')} "
                "or a newer one",
            )
        try:
            return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})
        except TypeError as exc:
            raise UsageError(f"{source}: {MANIFEST} lacks a field: {exc}") from exc


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: BackupManifest
    bytes: int
    seconds: float


def write_backup(settings: Settings, target: Path, *, images: bool = True) -> BackupResult:
    """Write the backup of ``settings.data_dir`` to ``target`` (mode 0600, made whole under
    a temporary name and renamed)."""
    started = time.monotonic()
    data_dir = settings.data_dir
    database = data_dir / DATABASE
    if not database.is_file():
        raise UsageError(
            f"{data_dir} holds no Stackyard state ({DATABASE} is missing)",
            hint="name the platform's data directory with --data-dir",
        )
    target = target.resolve()
    if target.is_relative_to(data_dir.resolve()):
        raise UsageError(
            f"{target} is inside the data directory it backs up",
            hint="write the backup somewhere else",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    logs = list(_record_logs(data_dir / LOGS))
    # From the database snapshot to the last blob, no retention runs: it could remove the
    # image of a release the snapshot holds.
    with (
        tempfile.TemporaryDirectory(prefix=".stackyard-backup-", dir=target.parent) as scratch,
        registry_maintenance(data_dir, who="backup"),
    ):
        manifest, members = _snapshot(data_dir, Path(scratch), images=images)
        manifest.log_files = len(logs)
        _write_tar(target, manifest, members, data_dir, logs)
    return BackupResult(target, manifest, target.stat().st_size, time.monotonic() - started)


def _write_tar(
    target: Path,
    manifest: BackupManifest,
    members: list[tuple[Path, str]],
    data_dir: Path,
    logs: list[Path],
) -> None:
    """The tar file, manifest first, made under a temporary name and renamed."""
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w|") as tar:
            _add_bytes(tar, MANIFEST, manifest.to_json())
            for path, name in members:
                tar.add(path, name)
            for relative in logs:
                _add_if_present(tar, data_dir, relative)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _snapshot(
    data_dir: Path, staging: Path, *, images: bool
) -> tuple[BackupManifest, list[tuple[Path, str]]]:
    """The manifest, and each file to add with its name in the backup, in order: the
    database snapshot, the platform files, the remotes' bundles, the registry's files."""
    snapshot = staging / DATABASE
    copy_database(data_dir / DATABASE, snapshot)
    manifest = BackupManifest(
        format=FORMAT,
        stackyard_version=__version__,
        schema_revision=None,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        data_dir=str(data_dir),
        images=images,
    )
    _describe_state(snapshot, manifest)
    members = [(snapshot, DATABASE)]
    manifest.platform_files = [n for n in PLATFORM_FILES if (data_dir / n).is_file()]
    members += [(data_dir / name, name) for name in manifest.platform_files]
    bundles = _bundle_remotes(data_dir / REMOTES, staging / REMOTES, manifest)
    members += [(bundle, f"{REMOTES}/{bundle.name}") for bundle in bundles]
    registry = list(_registry_files(data_dir, images))
    manifest.registry_files = len(registry)
    manifest.registry_bytes = sum((data_dir / p).stat().st_size for p in registry)
    members += [(data_dir / p, p.as_posix()) for p in registry]
    return manifest, members


def copy_database(source: Path, copy: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, in one step)."""
    try:
        with (
            closing(sqlite3.connect(source, timeout=30)) as live,
            closing(sqlite3.connect(copy)) as snapshot,
        ):
            live.backup(snapshot)
    except sqlite3.Error as exc:
        raise ComponentError(f"{source}: cannot copy the state database: {exc}") from exc


def _describe_state(snapshot: Path, manifest: BackupManifest) -> None:
    engine = open_database(f"sqlite:///{snapshot}")
    try:
        manifest.schema_revision = schema_revision(engine)
        with engine.connect() as connection:
            manifest.stacks = list(connection.scalars(select(Stack.name).order_by(Stack.name)))
            manifest.releases = connection.scalar(select(func.count()).select_from(Release)) or 0
            manifest.secrets = connection.scalar(select(func.count()).select_from(Secret)) or 0
    finally:
        engine.dispose()


def _bundle_remotes(remotes: Path, staging: Path, manifest: BackupManifest) -> list[Path]:
    """One ``git bundle`` of every ref per hosted remote; a remote nobody pushed to yet
    has nothing to keep."""
    bundles = []
    staging.mkdir(parents=True, exist_ok=True)
    repositories = sorted(remotes.glob("*.git")) if remotes.is_dir() else []
    for repository in repositories:
        stack = repository.name.removesuffix(".git")
        refs = _git(repository, "for-each-ref", "--format=%(refname)").split()
        if not refs:
            continue
        bundle = staging / f"{stack}.bundle"
        _git(repository, "bundle", "create", str(bundle), "--all")
        manifest.remotes[stack] = _git(repository, "symbolic-ref", "HEAD").strip()
        bundles.append(bundle)
    return bundles


def _git(repository: Path, *args: str) -> str:
    return run_git(
        ["git", f"--git-dir={repository}", *args],
        f"{args[0]} {repository.name}",
        timeout=GIT_TIMEOUT,
    )


def _registry_files(data_dir: Path, images: bool) -> Iterator[Path]:
    """The registry's password file; with images, its links, then its blobs (relative to
    the data directory). Hold the maintenance lock while these are listed and copied."""
    htpasswd = Path(REGISTRY) / "htpasswd"
    if (data_dir / htpasswd).is_file():
        yield htpasswd
    if not images:
        return
    root = registry_storage.storage_root(data_dir)
    prefix = root.relative_to(data_dir)
    for relative in registry_storage.metadata_files(root):
        yield prefix / relative
    for relative in registry_storage.blob_files(root):
        yield prefix / relative


def _record_logs(logs_dir: Path) -> Iterator[Path]:
    """The logs of builds, runs, releases and deployments, and builds' artifacts: the
    files in the folders of ``logs/``. The files at its top are this machine's processes'
    logs (the control plane's, the keeper's, the registry's, each Caddy's, rotated or
    not), left out like the rest of the data plane's runtime files in ``run/``."""
    if not logs_dir.is_dir():
        return
    for folder, subfolders, files in os.walk(logs_dir):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.parent == logs_dir:
                continue
            yield path.relative_to(logs_dir.parent)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_if_present(tar: tarfile.TarFile, base: Path, relative: Path) -> None:
    """A log may be removed (retention) or still growing: take what is there."""
    path = base / relative
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    _add_bytes(tar, relative.as_posix(), data)


def read_manifest(path: Path) -> BackupManifest:
    """The manifest of the backup at ``path``; a clear error for anything else."""
    try:
        with tarfile.open(path, "r:*") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST:
                raise UsageError(
                    f"{path} is not a Stackyard backup (its first member is not {MANIFEST})",
                    hint="give the file `stackyard backup` wrote",
                )
            extracted = tar.extractfile(member)
            data = extracted.read() if extracted is not None else b""
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(
            f"{path} is not a Stackyard backup: {exc}",
            hint="give the file `stackyard backup` wrote",
        ) from exc
    return BackupManifest.from_json(data, str(path))
