"""What retention keeps and removes, decided from plain facts (no process, no I/O).

``RetentionService`` (service.py) observes the store, the engine, the registry and the
logs into ``RetentionFacts``; ``plan_retention`` returns a ``RetentionPlan`` that the
service carries out. Kept: the images of the last N releases of every stage, every image a
task runs, the stage tags and ``latest``; the logs of the last N records of each kind.
Everything else of a stack goes, and everything of a stack that no longer exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

LATEST = "latest"
RECORD_KINDS = ("builds", "runs", "releases", "deployments")
"""The records that have a log each; artifacts of a build go with its log."""
STACK_LOG_DIRS = (*RECORD_KINDS, "artifacts")
"""The folders under the logs directory that hold one folder per stack."""


@dataclass(frozen=True)
class StageReleases:
    """The image digests of one stage's releases, newest release first."""

    stack: str
    stage: str
    digests: tuple[str, ...]
    numbers: tuple[int, ...]


@dataclass(frozen=True)
class RegistryRepository:
    """One repository of the platform's registry: its tags, and every manifest it holds
    (tagged or not; untagged ones are the images of older builds)."""

    name: str
    tags: Mapping[str, str]
    manifests: frozenset[str]


@dataclass(frozen=True)
class EngineImage:
    """One image in the engine: its tag and digest references (``repo:tag``,
    ``repo@sha256:…``)."""

    id: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class TargetName:
    """A stack's repository in a target's registry as the engine names it
    (``host:port/repository``): the images its tasks on that target pulled from there, when
    that target's engine is this one."""

    name: str
    stack: str


@dataclass(frozen=True)
class LoggedRecord:
    """A build, run, release or deployment and the log file it wrote."""

    kind: str  # one of RECORD_KINDS
    stack: str
    stage: str  # "" for builds and runs
    number: int
    log_path: str


@dataclass(frozen=True)
class RetentionFacts:
    keep_releases: int
    stacks: frozenset[str]
    releases: tuple[StageReleases, ...] = ()
    running: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Per stack, the digests its tasks run (any state: a stopped task can start again)."""
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The manifests an index (multi-platform image) lists, for the kept indexes."""
    repositories: tuple[RegistryRepository, ...] = ()
    engine_endpoint: str = ""
    """The registry's host:port as the engine names images (``127.0.0.1:5000``)."""
    engine_images: tuple[EngineImage, ...] = ()
    target_names: tuple[TargetName, ...] = ()
    records: tuple[LoggedRecord, ...] = ()
    log_dirs: tuple[tuple[str, str], ...] = ()
    """``(kind, stack)`` of every per-stack folder under the logs directory."""
    artifacts_dir: str = ""


@dataclass(frozen=True)
class ManifestRemoval:
    repository: str
    digest: str
    tags: tuple[str, ...]  # the tags that go with it


@dataclass(frozen=True)
class RetentionPlan:
    kept: Mapping[str, Mapping[str, str]]
    """Per stack: each kept digest and why (``release 12 of dev``, ``a task runs it``)."""
    manifests: tuple[ManifestRemoval, ...] = ()
    engine_references: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    """Log files and artifact folders of records beyond the last N."""
    folders: tuple[str, ...] = ()
    """Log folders of stacks that no longer exist."""

    @property
    def empty(self) -> bool:
        return not (self.manifests or self.engine_references or self.files or self.folders)


def kept_digests(facts: RetentionFacts, stack: str) -> dict[str, str]:
    """The digests of ``stack`` that stay, each with the first reason found."""
    kept: dict[str, str] = {}
    for stage in (s for s in facts.releases if s.stack == stack):
        newest = zip(stage.numbers, stage.digests, strict=True)
        for number, digest in list(newest)[: facts.keep_releases]:
            kept.setdefault(digest, f"release {number} of {stage.stage}")
    for digest in sorted(facts.running.get(stack, frozenset())):
        kept.setdefault(digest, "a task runs it")
    repository = next((r for r in facts.repositories if r.name == stack), None)
    stages = {s.stage for s in facts.releases if s.stack == stack}
    if repository is not None:
        for tag in sorted(stages | {LATEST}):
            if tag in repository.tags:
                kept.setdefault(repository.tags[tag], f"tag {tag}")
    for digest, why in list(kept.items()):
        for child in facts.children.get(digest, ()):
            kept.setdefault(child, f"part of {digest[:19]} ({why})")
    return kept


def plan_retention(facts: RetentionFacts) -> RetentionPlan:
    if facts.keep_releases < 1:
        raise ValueError(f"keep_releases must be at least 1, not {facts.keep_releases}")
    kept = {stack: kept_digests(facts, stack) for stack in sorted(facts.stacks)}
    return RetentionPlan(
        kept=kept,
        manifests=_manifest_removals(facts, kept),
        engine_references=_engine_removals(facts, kept),
        files=_old_record_files(facts),
        folders=tuple(
            f"{kind}/{stack}" for kind, stack in facts.log_dirs if stack not in facts.stacks
        ),
    )


def _manifest_removals(
    facts: RetentionFacts, kept: Mapping[str, Mapping[str, str]]
) -> tuple[ManifestRemoval, ...]:
    removals = []
    for repository in sorted(facts.repositories, key=lambda r: r.name):
        keep = kept.get(repository.name, {})  # a deleted stack keeps nothing
        digests = repository.manifests | frozenset(repository.tags.values())
        for digest in sorted(digests - keep.keys()):
            tags = tuple(sorted(t for t, d in repository.tags.items() if d == digest))
            removals.append(ManifestRemoval(repository.name, digest, tags))
    return tuple(removals)


def _engine_removals(
    facts: RetentionFacts, kept: Mapping[str, Mapping[str, str]]
) -> tuple[str, ...]:
    """References under the platform's registry name, or a stack's name in a target's
    registry, whose image no longer counts: not ``latest`` of the platform's name (the
    next build's cache), not a kept digest. An image also known by other names keeps
    those; the engine itself refuses to remove an image a container uses."""
    removals = []
    for image in facts.engine_images:
        ours = [(r, owner) for r in image.references if (owner := _owner(r, facts)) is not None]
        if ours and not any(_keeps_image(r, stack, kept) for r, stack in ours):
            removals += [r for r, _ in ours]
    return tuple(removals)


def _owner(reference: str, facts: RetentionFacts) -> str | None:
    """The stack whose image ``reference`` names, or None when it is not a platform's name."""
    name = _repository(reference)
    for target in facts.target_names:
        if target.name == name:
            return target.stack
    prefix = f"{facts.engine_endpoint}/"
    return name.removeprefix(prefix) if facts.engine_endpoint and name.startswith(prefix) else None


def _old_record_files(facts: RetentionFacts) -> tuple[str, ...]:
    """The logs of each kind's records beyond the newest N per stack (per stage for
    releases and deployments), and a removed build's artifacts."""
    groups: dict[tuple[str, str, str], list[LoggedRecord]] = {}
    for record in facts.records:
        if record.stack in facts.stacks:
            groups.setdefault((record.kind, record.stack, record.stage), []).append(record)
    files = []
    for (kind, stack, _stage), records in sorted(groups.items()):
        newest_first = sorted(records, key=lambda r: r.number, reverse=True)
        for record in newest_first[facts.keep_releases :]:
            if record.log_path:
                files.append(record.log_path)
            if kind == "builds" and facts.artifacts_dir:
                files.append(f"{facts.artifacts_dir}/{stack}/{record.number}")
    return tuple(files)


def _keeps_image(reference: str, stack: str, kept: Mapping[str, Mapping[str, str]]) -> bool:
    """A kept digest of ``stack`` keeps its image, and so does a ``latest`` tag."""
    if "@" in reference:
        return reference.rsplit("@", 1)[1] in kept.get(stack, {})
    return reference.rsplit(":", 1)[1] == LATEST


def _repository(reference: str) -> str:
    """``host:5000/web:latest`` or ``host:5000/web@sha256:…`` → ``host:5000/web``."""
    if "@" in reference:
        return reference.split("@", 1)[0]
    name, _, tag = reference.rpartition(":")
    return name if name and "/" not in tag else reference
