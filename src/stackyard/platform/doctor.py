"""``stackyard doctor``'s judgement: observed facts in, one finding per check out.

Every check is a pure function of ``DoctorFacts`` (inspection.py gathers them) that
returns a ``Finding``: ok, warn or fail, a line that says what was seen, and for a
problem a one-line fix. ``CHECKS`` lists them in the order they are shown; a new concern
adds its facts and a function here. Thresholds are constants, so a test names the
boundary it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from stackyard.platform.diskuse import human_bytes

DISK_WARN, DISK_FAIL = 0.85, 0.95  # fraction of the data directory's filesystem used
MEMORY_WARN, MEMORY_FAIL = 0.10, 0.05  # fraction of memory still available
# Caddy renews a certificate when a third of its life is left (30 days of Let's Encrypt's
# 90): one this close to its end was not renewed, and will not be without help.
CERTIFICATE_WARN = timedelta(days=14)


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    summary: str
    fix: str = ""


@dataclass(frozen=True)
class Answer:
    """How a component answered: ``None`` detail means it answered as it should."""

    answered: bool
    detail: str = ""


@dataclass(frozen=True)
class RouteSource:
    """One route's upstream source and how many upstreams it gave (None: no answer)."""

    name: str
    resolver: str
    upstreams: int | None


@dataclass(frozen=True)
class FileMode:
    path: str
    mode: int  # permission bits
    owner: int
    directory: bool


@dataclass(frozen=True)
class Orphan:
    """A task of this platform whose stack no longer exists."""

    id: str
    name: str
    stack: str


@dataclass(frozen=True)
class CertificateFact:
    """Where one host name's certificate stands (router/certificates.py reads it); no
    stack or stage: the platform's own name (``up --public-api``)."""

    stack: str
    stage: str
    name: str
    state: str  # pending, valid, expired, failed
    expires: datetime | None = None
    error: str = ""

    def where(self) -> str:
        if not self.stack:
            return f"{self.name} (the public API)"
        return f"{self.name} ({self.stack}/{self.stage})"


@dataclass(frozen=True)
class TargetFact:
    """How a target other than ``local`` answered ``targets check``: "ok", or the problem
    with its engine and with its registry."""

    name: str
    engine: str
    registry: str
    nodes: int | None = None


@dataclass(frozen=True)
class RegistryFact:
    """How an outside registry answered its stored credentials: "ok", or the problem."""

    name: str
    problem: str = ""


@dataclass(frozen=True)
class DoctorFacts:
    data_dir: str
    user: int  # who runs doctor (the platform runs as the same user)
    control_plane: Answer
    engine: Answer
    registry: Answer
    router: Answer
    sources: tuple[RouteSource, ...] | None  # None when the router could not be asked
    disk_total: int
    disk_free: int
    memory_total: int
    memory_available: int
    files: tuple[FileMode, ...]
    schema: str | None  # the database's revision; None without a database
    database_error: str  # why the database could not be read; "" when it could
    known_schemas: tuple[str, ...]
    orphans: tuple[Orphan, ...] | None  # None when the engine could not be asked
    disk_use: Mapping[str, int] = field(default_factory=dict)
    last_retention: Mapping[str, Any] | None = None
    # Host names served over HTTPS; None when Caddy (its storage) could not be asked.
    certificates: tuple[CertificateFact, ...] | None = ()
    now: datetime | None = None  # when the facts were observed (certificate expiry)
    # The command that removes an orphan task by its id on the platform's engine (a
    # docker container, or a swarm service).
    orphan_removal: str = "docker rm -f"
    # Where the data plane's keeper answers upstream lookups now ("" when no keeper runs).
    responder: str = ""
    # The targets besides ``local``, each as ``targets check`` found it; None when they
    # could not be asked (the control plane does not answer).
    targets: tuple[TargetFact, ...] | None = ()
    # The outside registries stacks push to, each pinged with its stored credentials;
    # None when they could not be asked (the control plane does not answer).
    registries: tuple[RegistryFact, ...] | None = ()


def _component(check: str, answer: Answer, ok: str, problem: str, fix: str) -> Finding:
    if answer.answered:
        return Finding(check, Verdict.OK, ok)
    return Finding(check, Verdict.FAIL, problem.format(detail=answer.detail), fix)


def _restart(facts: DoctorFacts, log: str) -> str:
    # The data plane's keeper starts a component that exits; one that runs and does not
    # answer needs the data plane restarted (the apps stop for that moment).
    return (
        "restart the data plane (stackyard down --all, then stackyard up -d); its log is "
        f"{facts.data_dir}/logs/{log}"
    )


def check_control_plane(facts: DoctorFacts) -> Finding:
    return _component(
        "control plane",
        facts.control_plane,
        "the API answers",
        "the API {detail}: nothing deploys or heals",
        "start it: stackyard up -d",
    )


def check_engine(facts: DoctorFacts) -> Finding:
    return _component(
        "engine",
        facts.engine,
        "the engine answers",
        "the engine does not answer: {detail}",
        "start the Docker engine (scripts/setup-host does), or set DOCKER_HOST",
    )


def check_registry(facts: DoctorFacts) -> Finding:
    return _component(
        "registry",
        facts.registry,
        "the registry answers and takes its login",
        "the registry {detail}",
        _restart(facts, "registry.log"),
    )


def check_router(facts: DoctorFacts) -> Finding:
    return _component(
        "router",
        facts.router,
        "every Caddy's admin API answers",
        "the router {detail}: stages are not served",
        _restart(facts, "caddy-*.log"),
    )


def check_upstream_sources(facts: DoctorFacts) -> Finding:
    if facts.sources is None:
        return Finding("upstream source", Verdict.WARN, "not checked: the router did not answer")
    silent = [s for s in facts.sources if s.upstreams is None]
    if silent:
        asked = {s.resolver for s in silent}
        resolvers = ", ".join(sorted(asked))
        fix = (
            "start the platform (stackyard up -d): it starts the data plane's keeper, which "
            "serves the upstreams, again"
        )
        if facts.responder and facts.responder not in asked:
            fix = (
                f"the keeper answers on {facts.responder}: restart the control plane "
                "(stackyard down, then stackyard up -d), which points the routes there"
            )
        return Finding(
            "upstream source",
            Verdict.FAIL,
            f"{len(silent)} route(s) ask {resolvers} for their upstreams and get no answer",
            fix,
        )
    # A lookup by the request's host ("{http.request.host}.hosts…") is not a route.
    routes = [s for s in facts.sources if "{" not in s.name]
    by_host = len(routes) < len(facts.sources)
    empty = [s.name.split(".", 1)[0] for s in routes if s.upstreams == 0]
    if empty:
        return Finding(
            "upstream source",
            Verdict.WARN,
            f"route(s) without an upstream (they answer 502): {', '.join(empty)}",
            "see why with: stackyard check STACK --stage STAGE",
        )
    return Finding(
        "upstream source",
        Verdict.OK,
        f"{len(routes)} route(s){' and the host names' if by_host else ''} get their upstreams"
        if facts.sources
        else "no route yet",
    )


def check_disk(facts: DoctorFacts) -> Finding:
    used = 0.0 if facts.disk_total == 0 else 1 - facts.disk_free / facts.disk_total
    summary = f"{used:.0%} of the data directory's disk used, {human_bytes(facts.disk_free)} free"
    if used < DISK_WARN:
        return Finding("disk", Verdict.OK, summary)
    verdict = Verdict.FAIL if used >= DISK_FAIL else Verdict.WARN
    return Finding(
        "disk", verdict, summary, "remove old images and logs: stackyard prune (or free space)"
    )


def check_memory(facts: DoctorFacts) -> Finding:
    available = 1.0 if facts.memory_total == 0 else facts.memory_available / facts.memory_total
    summary = (
        f"{human_bytes(facts.memory_available)} of {human_bytes(facts.memory_total)} memory "
        "available"
    )
    if available > MEMORY_WARN:
        return Finding("memory", Verdict.OK, summary)
    verdict = Verdict.FAIL if available <= MEMORY_FAIL else Verdict.WARN
    return Finding("memory", verdict, summary, "lower stages' replicas or memory, or add memory")


def check_permissions(facts: DoctorFacts) -> Finding:
    for item in facts.files:
        if item.owner != facts.user:
            return Finding(
                "permissions",
                Verdict.FAIL,
                f"{item.path} belongs to uid {item.owner}, not to this user ({facts.user})",
                f"chown -R {facts.user} {facts.data_dir} (or run Stackyard as uid {item.owner})",
            )
        if item.mode & 0o077:
            wanted = "700" if item.directory else "600"
            return Finding(
                "permissions",
                Verdict.FAIL,
                f"{item.path} is mode {item.mode:o}: other users can read the platform's secrets",
                f"chmod {wanted} {item.path}",
            )
    return Finding("permissions", Verdict.OK, "the data directory and its secrets are private")


def check_schema(facts: DoctorFacts) -> Finding:
    head = facts.known_schemas[-1] if facts.known_schemas else None
    if facts.database_error and facts.schema in facts.known_schemas:
        return Finding(
            "database",
            Verdict.FAIL,
            f"the state database cannot be read: {facts.database_error}",
            "restore it from a backup: stackyard restore FILE --data-dir NEW_DIR",
        )
    if facts.schema is None:
        return Finding("database", Verdict.WARN, "no state yet", "start the platform once")
    if facts.schema == head:
        return Finding("database", Verdict.OK, f"schema at revision {head}")
    if facts.schema in facts.known_schemas:
        return Finding(
            "database",
            Verdict.WARN,
            f"schema at revision {facts.schema}, this Stackyard's is {head}",
            "stackyard up migrates it at start",
        )
    return Finding(
        "database",
        Verdict.FAIL,
        f"schema at revision {facts.schema}, unknown to this Stackyard (a newer one wrote it)",
        "run the Stackyard version that wrote it",
    )


def check_orphans(facts: DoctorFacts) -> Finding:
    if facts.orphans is None:
        return Finding("orphan tasks", Verdict.WARN, "not checked: the engine did not answer")
    if not facts.orphans:
        return Finding("orphan tasks", Verdict.OK, "every task belongs to a stack")
    stacks = sorted({o.stack for o in facts.orphans})
    ids = " ".join(o.id[:12] for o in facts.orphans)
    return Finding(
        "orphan tasks",
        Verdict.WARN,
        f"{len(facts.orphans)} task(s) of deleted stack(s) {', '.join(stacks)} still exist "
        "(a running platform removes them within a minute of their engine answering)",
        f"{facts.orphan_removal} {ids}",
    )


def check_certificates(facts: DoctorFacts) -> Finding:
    found = facts.certificates
    if found is None:
        return Finding("certificates", Verdict.WARN, "not checked: Caddy did not answer")
    if not found:
        return Finding("certificates", Verdict.OK, "no stage is served over HTTPS")
    broken = [c for c in found if c.state in ("failed", "expired")]
    if broken:
        first = broken[0]
        why = f"failed: {first.error}" if first.state == "failed" else "expired"
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        return Finding(
            "certificates",
            Verdict.FAIL,
            f"{first.where()} {why}{more}",
            f"check that {first.name} resolves to this machine and ports 80/443 reach it; "
            + (
                f"`stackyard domains {first.stack}` shows every name"
                if first.stack
                else "it is the name `up --public-api` publishes the API on"
            ),
        )
    now = facts.now or datetime.now().astimezone()
    ending = [c for c in found if c.expires is not None and c.expires - now < CERTIFICATE_WARN]
    if ending:
        first = min(ending, key=lambda c: c.expires or now)
        return Finding(
            "certificates",
            Verdict.WARN,
            f"{first.where()} expires {first.expires:%Y-%m-%d %H:%M} UTC and was not renewed",
            f"read the renewal's error in {facts.data_dir}/run/caddy-*-acme.log",
        )
    valid = sum(c.state == "valid" for c in found)
    pending = len(found) - valid
    waiting = f", {pending} being obtained" if pending else ""
    return Finding("certificates", Verdict.OK, f"{valid} valid{waiting}")


def check_targets(facts: DoctorFacts) -> Finding:
    if facts.targets is None:
        return Finding("targets", Verdict.WARN, "not checked: the control plane does not answer")
    if not facts.targets:
        return Finding("targets", Verdict.OK, "no target besides local")
    broken = [t for t in facts.targets if (t.engine, t.registry) != ("ok", "ok")]
    if broken:
        problems = "; ".join(
            f"{t.name}: " + ", ".join(p for p in (t.engine, t.registry) if p != "ok")
            for t in broken
        )
        return Finding(
            "targets",
            Verdict.FAIL,
            f"{len(broken)} of {len(facts.targets)} target(s) cannot be used: {problems}",
            "the stages on them cannot deploy or heal until they answer; check again with "
            f"stackyard targets check {broken[0].name}",
        )
    shown = ", ".join(
        t.name + (f" ({t.nodes} nodes)" if t.nodes is not None else "") for t in facts.targets
    )
    return Finding("targets", Verdict.OK, f"every target's engine and registry answer: {shown}")


def check_registries(facts: DoctorFacts) -> Finding:
    if facts.registries is None:
        return Finding("registries", Verdict.WARN, "not checked: the control plane does not answer")
    if not facts.registries:
        return Finding("registries", Verdict.OK, "no outside registry")
    broken = [r for r in facts.registries if r.problem]
    if broken:
        problems = "; ".join(f"{r.name}: {r.problem}" for r in broken)
        return Finding(
            "registries",
            Verdict.FAIL,
            f"{len(broken)} of {len(facts.registries)} outside registr"
            f"{'y' if len(facts.registries) == 1 else 'ies'} refuse or do not answer: {problems}",
            "builds and releases of the stacks on them fail; a password or token rotated "
            f"there: stackyard registries update {broken[0].name} --password-stdin",
        )
    names = ", ".join(r.name for r in facts.registries)
    return Finding(
        "registries", Verdict.OK, f"every outside registry takes its credentials: {names}"
    )


CHECKS: tuple[Callable[[DoctorFacts], Finding], ...] = (
    check_control_plane,
    check_engine,
    check_registry,
    check_router,
    check_upstream_sources,
    check_disk,
    check_memory,
    check_permissions,
    check_schema,
    check_orphans,
    check_certificates,
    check_targets,
    check_registries,
)


def diagnose(facts: DoctorFacts) -> list[Finding]:
    return [check(facts) for check in CHECKS]


def failed(findings: list[Finding]) -> bool:
    return any(f.verdict is Verdict.FAIL for f in findings)
