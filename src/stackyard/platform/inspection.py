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
from stackyard.platform.state import PlatformState, pid_alive
from stackyard.router.caddy import ADMIN_HOST, UnixSocketTransport
from stackyard.router.certificates import acme_log_path, certificate_of, storage_root
from stackyard.router.upstream_probe import ask, dynamic_sources
from stackyard.settings import Settings
from stackyard.store.database import known_revisions, open_database, schema_revision
from stackyard.store.models import Stack, StageRoute

TIMEOUT = 2.0  # seconds each component has to answer


def effective_settings(settings: Settings) -> Settings:
    """The settings with the ports the running platform recorded, if one runs."""
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
    settings = effective_settings(settings)
    data_dir = settings.data_dir
    disk = filesystem_use(data_dir if data_dir.exists() else data_dir.parent)
    total, available = memory()
    router, config = _router(settings)
    stacks, schema, database_error = _state(data_dir)
    engine, orphans = _engine(settings, stacks)
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
        schema=schema,
        database_error=database_error,
        known_schemas=tuple(known_revisions()),
        orphans=orphans,
        disk_use=data_dir_use(data_dir) if data_dir.exists() else {},
        last_retention=_last_retention(data_dir),
        certificates=None if config is None else _certificates(settings, config),
        now=datetime.now(UTC),
    )


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


def _certificates(settings: Settings, config: Any) -> tuple[CertificateFact, ...]:
    """Each HTTPS host name's certificate, the public API's too, read as `stackyard
    domains` reads it: from Caddy's certificate storage and each Caddy's log of its
    attempts."""
    names = _https_names(settings.data_dir)
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


def _https_names(data_dir: Path) -> list[tuple[str, str, str]]:
    """(stack, stage, host name) of every name a stage serves over HTTPS."""
    database = data_dir / "stackyard.db"
    if not database.is_file():
        return []
    engine = open_database(f"sqlite:///{database}")
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Stack.name, StageRoute).join(Stack, Stack.id == StageRoute.stack_id)
            ).all()
    except (StackyardError, SQLAlchemyError):
        return []  # the database check reports why it cannot be read
    finally:
        engine.dispose()
    found = []
    for stack, route in rows:
        if route.host is None or route.tls == "off":
            continue
        hosts = dict.fromkeys([route.host, *(route.aliases or ()), *(route.added_domains or ())])
        found += [(stack, route.stage, host) for host in hosts]
    return sorted(found)


def _state(data_dir: Path) -> tuple[set[str] | None, str | None, str]:
    """The stacks in the state database, its schema revision (no migration), and why it
    could not be read ("" when it could)."""
    database = data_dir / "stackyard.db"
    if not database.is_file():
        return None, None, ""
    engine = open_database(f"sqlite:///{database}")
    try:
        schema = schema_revision(engine)
        with engine.connect() as connection:
            stacks = set(connection.scalars(select(Stack.name)))
    except StackyardError as exc:
        return None, None, exc.message
    except SQLAlchemyError as exc:  # a schema this Stackyard does not know, a broken file
        return None, schema, f"{database}: {exc}"
    finally:
        engine.dispose()
    return stacks, schema, ""


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
