"""What ``stackyard doctor`` observes: each component asked as the platform asks it.

Runs in the CLI's process on the platform's machine, so it works when the control plane
does not: the data directory, the engine, the registry and every Caddy (over its admin
socket) are asked directly (at the addresses the running platform recorded, else the
settings'), each with a short
timeout. A question that cannot be answered becomes a fact (``Answer(False, why)``),
never an exception; doctor.py judges the facts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from stackyard import plugins
from stackyard.engines.base import LABEL_PLATFORM, LABEL_STACK
from stackyard.errors import StackyardError
from stackyard.platform.backup import SECRET_FILES
from stackyard.platform.diskuse import RETENTION_REPORT, data_dir_use, filesystem_use
from stackyard.platform.doctor import (
    Answer,
    CertificateFact,
    DoctorFacts,
    FileMode,
    Orphan,
    RouteSource,
)
from stackyard.platform.state import DataplaneRecord, PlatformState, pid_alive
from stackyard.router.caddy import ADMIN_HOST, UnixSocketTransport
from stackyard.router.certificates import acme_log_path, certificate_of, storage_root
from stackyard.router.upstream_probe import ask, dynamic_sources
from stackyard.settings import Settings
from stackyard.store.database import known_revisions, open_database, schema_revision
from stackyard.store.models import Stack, StageRoute

TIMEOUT = 2.0  # seconds each component has to answer


def effective_settings(settings: Settings) -> Settings:
    """The settings with the ports the running platform recorded, if one runs (for when
    its command line cannot be read)."""
    try:
        state = PlatformState.read(settings.state_file)
    except StackyardError:
        return settings
    if state is None or not pid_alive(state.pid):
        return settings
    return settings.with_overrides(
        api_port=urlsplit(state.api_url).port,
        registry_port=int(state.registry.rpartition(":")[2]),
    )


def observe(settings: Settings) -> DoctorFacts:
    """Every fact doctor judges, asked at ``settings``' addresses (the running platform's:
    see doctor's ``_running_settings``)."""
    data_dir = settings.data_dir
    disk = filesystem_use(data_dir if data_dir.exists() else data_dir.parent)
    total, available = memory()
    router, config = _router(settings)
    stored = _state(data_dir)
    engine, orphans = _engine(settings, stored.stacks)
    return DoctorFacts(
        data_dir=str(data_dir),
        user=os.getuid(),
        control_plane=_answer(f"{settings.api_url}/healthz", frozenset({200})),
        engine=engine,
        registry=_registry(settings),
        router=router,
        sources=None if config is None else _sources(config),
        disk_total=disk.total,
        disk_free=disk.free,
        memory_total=total,
        memory_available=available,
        files=file_modes(data_dir),
        schema=stored.schema,
        database_error=stored.error,
        known_schemas=tuple(known_revisions()),
        orphans=orphans,
        disk_use=data_dir_use(data_dir) if data_dir.exists() else {},
        last_retention=_last_retention(data_dir),
        certificates=None if config is None else _certificates(settings, config, stored),
        now=datetime.now(UTC),
        orphan_removal=orphan_removal(settings),
        responder=_responder(settings),
    )


def _responder(settings: Settings) -> str:
    """The address the running keeper's upstream responder answers on ("" without one)."""
    record = DataplaneRecord.read(settings.dataplane_file)
    return record.dns if record is not None and pid_alive(record.pid) else ""


def orphan_removal(settings: Settings) -> str:
    """The docker command that removes one of the platform's tasks by id: a container,
    or on a swarm a service; at the platform's engine endpoint when it has one."""
    docker = f"docker -H {settings.engine_endpoint}" if settings.engine_endpoint else "docker"
    return f"{docker} service rm" if settings.engine == "swarm" else f"{docker} rm -f"


def _answer(url: str, wanted: frozenset[int], **options: Any) -> Answer:
    try:
        status = httpx.get(url, timeout=TIMEOUT, **options).status_code
    except httpx.HTTPError as exc:
        return Answer(False, f"does not answer at {url} ({type(exc).__name__})")
    if status in wanted:
        return Answer(True)
    return Answer(False, f"answers HTTP {status} at {url}")


def _registry(settings: Settings) -> Answer:
    url = f"http://{settings.registry_endpoint}/v2/"
    path = settings.data_dir / "registry-credentials.json"
    try:
        login = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _answer(url, frozenset({200, 401}))
    found = _answer(url, frozenset({200}), auth=(login["username"], login["password"]))
    if found.detail.startswith("answers HTTP 401"):
        return Answer(False, f"refuses the platform's login ({path})")
    return found


def _router(settings: Settings) -> tuple[Answer, Any]:
    """Every Caddy's admin API, over its unix socket (as the platform asks it); the config
    of the first that answers (every Caddy serves the same routes)."""
    config: Any = None
    for socket_path in settings.caddy_admin_sockets:
        where = f"{ADMIN_HOST} over {socket_path}"
        try:
            with httpx.Client(
                base_url=f"http://{ADMIN_HOST}",
                transport=UnixSocketTransport(socket_path, TIMEOUT),
                timeout=TIMEOUT,
                trust_env=False,
            ) as client:
                response = client.get("/config/")
        except httpx.HTTPError as exc:
            return Answer(False, f"does not answer at {where} ({type(exc).__name__})"), config
        if response.status_code != 200:
            return Answer(False, f"answers HTTP {response.status_code} at {where}"), config
        if config is None:
            config = response.json()
    return Answer(True), config


def _sources(config: Any) -> tuple[RouteSource, ...]:
    answers = [ask(source, timeout=TIMEOUT) for source in dynamic_sources(config)]
    return tuple(RouteSource(a.source.name, a.source.resolver, a.upstreams) for a in answers)


def _certificates(
    settings: Settings, config: Any, stored: _StoredState
) -> tuple[CertificateFact, ...]:
    """Each HTTPS host name's certificate, the public API's too, read as `stackyard
    domains` reads it: from Caddy's certificate storage and each Caddy's log of its
    attempts."""
    names = list(stored.https_names)
    if settings.public_api:
        names.append(("", "", settings.public_api))
    storage = storage_root(config)
    logs = [acme_log_path(path) for path in settings.caddy_admin_sockets]
    facts = []
    for stack, stage, name in names:
        certificate = certificate_of(name, storage, logs)
        facts.append(
            CertificateFact(
                stack, stage, name, certificate.state, certificate.expires, certificate.error
            )
        )
    return tuple(facts)


@dataclass(frozen=True)
class _StoredState:
    """What doctor reads from the state database, in one opening of it."""

    stacks: set[str] | None = None  # None: no database, or it could not be read
    schema: str | None = None
    error: str = ""  # why it could not be read
    https_names: tuple[tuple[str, str, str], ...] = ()  # (stack, stage, host name)


def _state(data_dir: Path) -> _StoredState:
    """The stacks in the state database, its schema revision (no migration) and every
    name a stage serves over HTTPS; why it could not be read."""
    database = data_dir / "stackyard.db"
    if not database.is_file():
        return _StoredState()
    engine = open_database(f"sqlite:///{database}")
    try:
        schema = schema_revision(engine)
        with Session(engine) as session:
            stacks = set(session.scalars(select(Stack.name)))
            rows = _routes(session)
    except StackyardError as exc:
        return _StoredState(error=exc.message)
    except SQLAlchemyError as exc:  # a schema this Stackyard does not know, a broken file
        return _StoredState(schema=schema, error=f"{database}: {exc}")
    finally:
        engine.dispose()
    names = sorted(
        (stack, route.stage, name)
        for stack, route in rows
        if route.host is not None and route.tls != "off"
        for name in route.names
    )
    return _StoredState(stacks, schema, "", tuple(names))


def _routes(session: Session) -> list[Any]:
    """(stack name, route) of every stage route; none from a schema without them (doctor
    reports the schema itself)."""
    try:
        return list(
            session.execute(
                select(Stack.name, StageRoute).join(Stack, Stack.id == StageRoute.stack_id)
            ).all()
        )
    except SQLAlchemyError:
        session.rollback()
        return []


def _engine(
    settings: Settings, stacks: set[str] | None
) -> tuple[Answer, tuple[Orphan, ...] | None]:
    try:
        engine = plugins.create(
            plugins.engine(settings.engine), {"endpoint": settings.engine_endpoint}
        )
    except StackyardError as exc:
        return Answer(False, exc.message), None
    try:
        engine.ping()
        id_file = settings.platform_id_file
        if stacks is None or not id_file.is_file():
            return Answer(True), ()
        platform_id = id_file.read_text(encoding="utf-8").strip()
        tasks = engine.list({LABEL_PLATFORM: platform_id})
    except StackyardError as exc:
        return Answer(False, exc.message), None
    finally:
        engine.close()
    orphans = tuple(
        Orphan(task.id, task.name, task.labels.get(LABEL_STACK, ""))
        for task in tasks
        if task.labels.get(LABEL_STACK, "") not in stacks
    )
    return Answer(True), orphans


def file_modes(data_dir: Path) -> tuple[FileMode, ...]:
    """The data directory and the secret files in it. (The database and the rest are
    private through the directory's own mode.)"""
    found = []
    for path in (data_dir, *(data_dir / name for name in SECRET_FILES)):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        found.append(FileMode(str(path), stat.st_mode & 0o777, stat.st_uid, path.is_dir()))
    return tuple(found)


def memory() -> tuple[int, int]:
    """Total and available memory in bytes, from /proc/meminfo (0, 0 elsewhere)."""
    try:
        lines = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    except OSError:
        return 0, 0
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _last_retention(data_dir: Path) -> dict[str, Any] | None:
    try:
        report: dict[str, Any] = json.loads((data_dir / RETENTION_REPORT).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return report
