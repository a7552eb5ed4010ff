"""Retention: observe, plan (plan.py), remove, collect the registry's garbage, report.

``RetentionService.run`` is what ``stackyard prune`` and the daily schedule call. In order:
the disk use before; the plan; each stack's manifests, on that stack's build worker (no
build of the stack pushes meanwhile) holding the stack's release lock (no release,
rollback or tag move of it meanwhile) and only if still not kept when it gets there; the
copies of releases no longer kept in the registries of targets (the same way); the
engine's old images; old record logs and the folders of deleted stacks; the rotation of
the growing logs; the registry's garbage collection (read-only for that time); the disk
use after. A step that fails is reported and the others still run. The last report is
kept in ``<data dir>/retention.json`` for ``doctor`` and the console.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from stackyard.engines.base import LABEL_PLATFORM, LABEL_STACK, Engine, TaskInfo
from stackyard.errors import NotFoundError, StackyardError, UsageError
from stackyard.images.docker_builder import DockerBuilder
from stackyard.images.imagestore import LOCAL_TARGET, ImageStore
from stackyard.images.registry_base import Registry
from stackyard.pipeline.releases import stage_target_name
from stackyard.pipeline.retention.plan import (
    STACK_LOG_DIRS,
    EngineImage,
    LoggedRecord,
    ManifestRemoval,
    RegistryRepository,
    RetentionFacts,
    RetentionPlan,
    StageReleases,
    TargetName,
    kept_digests,
    plan_retention,
)
from stackyard.platform import registry_storage
from stackyard.platform.diskuse import RETENTION_REPORT, data_dir_use
from stackyard.platform.logrotation import (
    GROWING_LOGS,
    GrowingLog,
    growing_files,
    plan_rotations,
    rotate,
)
from stackyard.platform.maintenance import registry_maintenance
from stackyard.stacks.stages import retired_stages_of
from stackyard.store.models import Build, Deployment, PipelineRun, Release, Stack

log = logging.getLogger(__name__)

FIRST_RUN_DELAY = 600.0  # seconds after start before a first scheduled run (never run before)

BetweenBuilds = Callable[[str, Callable[[], None]], None]
"""Run a function on a stack's build worker, between two of its builds."""
StackLock = Callable[[str], threading.RLock]
"""stack -> the lock its releases hold from plan to record (``ReleaseService.stack_lock``)."""
CopyPlace = Callable[[str, str], tuple[Registry, str] | None]
"""(stack, target) -> the stack's repository in the registry that target pulls from, when
it is another than the stack's own (None: nothing is copied for that target). A
NotFoundError names a target that was removed."""


@dataclass(frozen=True)
class TargetCopies:
    """The stack's repository in a target's registry, and the digests of the releases whose
    target pulls from there (copied there by those releases; a registry lists no untagged
    manifest, so these are what may be there)."""

    stack: str
    registry: Registry
    repository: str
    digests: frozenset[str]

    @property
    def where(self) -> str:
        return f"{self.registry.endpoint}/{self.repository}"


@dataclass
class RetentionReport:
    """What one run removed, and the bytes per part of the data directory before and after."""

    keep_releases: int
    dry_run: bool
    started_at: str
    finished_at: str = ""
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    manifests: list[str] = field(default_factory=list)  # repo@digest
    engine_references: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    garbage_collected: bool = False
    garbage_collection_seconds: float = 0.0  # the registry read-only, collected, serving again
    kept: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RetentionService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        images: ImageStore,
        engine: Engine,
        *,
        platform_id: str,
        data_dir: Path,
        keep_releases: int,
        between_builds: BetweenBuilds,
        builder_factory: Callable[[], DockerBuilder] | None = DockerBuilder,
        collect_garbage: Callable[[], str] | None = None,
        every: float = 86400.0,
        copy_place: CopyPlace = lambda _stack, _target: None,
        target_tasks: Callable[[], Iterable[TaskInfo]] = lambda: (),
        stack_lock: StackLock = lambda _stack: threading.RLock(),  # none shared: no releases
    ) -> None:
        if keep_releases < 1:
            raise UsageError(f"keep releases: {keep_releases} is not a count of 1 or more")
        self._sessions = sessions
        self._images = images
        self._engine = engine
        self._platform_id = platform_id
        self.data_dir = data_dir
        self.keep_releases = keep_releases
        self._between_builds = between_builds
        self._builder_factory = builder_factory
        self._collect_garbage = collect_garbage
        self._every = every
        self._copy_place = copy_place
        self._target_tasks = target_tasks  # the platform's tasks on other targets' engines
        self._stack_lock = stack_lock
        self._running = threading.Lock()
        self._stop = threading.Event()
        self._schedule: threading.Thread | None = None

    # -- the schedule

    def start(self) -> None:
        """Run retention every ``every`` seconds, counted from the last run (across
        restarts); the first ever run waits FIRST_RUN_DELAY after start. With ``every`` 0
        there is no schedule: retention runs when asked (`stackyard prune`)."""
        if self._every <= 0:
            log.info("scheduled retention is off (--retention-interval 0)")
            return
        self._schedule = threading.Thread(target=self._scheduled, name="retention", daemon=True)
        self._schedule.start()

    def stop(self) -> None:
        self._stop.set()
        if self._schedule is not None:
            self._schedule.join(timeout=5)

    def _scheduled(self) -> None:
        while not self._stop.wait(self._seconds_to_next_run()):
            try:
                self.run()
            except StackyardError as exc:  # e.g. a manual run under way: try next time
                log.warning("scheduled retention did not run: %s", exc)
            except Exception:  # a bug must not end the schedule: say so, try next time
                log.exception("scheduled retention failed")

    def _seconds_to_next_run(self) -> float:
        last = self.last_report()
        if last is None or not last.get("finished_at"):
            return FIRST_RUN_DELAY
        finished = datetime.fromisoformat(str(last["finished_at"]))
        return max(60.0, self._every - (datetime.now(UTC) - finished).total_seconds())

    # -- reading

    def last_report(self) -> dict[str, Any] | None:
        path = self.data_dir / RETENTION_REPORT
        try:
            report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s); it is written again at the next run", path, exc)
            return None
        return report

    def disk_use(self, *, engine: bool = True) -> dict[str, int]:
        """Bytes per part of the data directory, and (``engine``) the engine's images of
        the platform, which takes the engine a second or so to count (none without a
        builder: an engine that keeps no images here)."""
        use = data_dir_use(self.data_dir)
        if not engine or self._builder_factory is None:
            return use
        builder = self._builder_factory()
        try:
            ids = {image_id for image_id, _ in builder.images_named(self._images.endpoint)}
            use["engine images"] = builder.unique_bytes(ids)
        finally:
            builder.close()
        return use

    def plan(self) -> RetentionPlan:
        return plan_retention(self.observe())

    # -- observing

    def observe(self, only: str | None = None) -> RetentionFacts:
        """Everything the plan needs; with ``only``, just that stack's images."""
        stacks, releases, records = self._records(only)
        repositories = self._repositories(stacks if only else None)
        running = self._running_digests()
        facts = RetentionFacts(
            keep_releases=self.keep_releases,
            stacks=frozenset(stacks),
            releases=releases,
            running=running,
            repositories=repositories,
        )
        children = self._children(facts)
        if only is not None:
            return replace(facts, children=children)
        # The images tasks on targets with registries of their own pulled: this engine's,
        # when such a target's engine is this one.
        copies = self.copies()
        named: list[tuple[str, tuple[str, ...]]] = []
        if self._builder_factory is not None:
            registries = {self._images.endpoint, *(c.registry.endpoint for c in copies)}
            builder = self._builder_factory()
            try:
                named = builder.images_named(*sorted(registries))
            finally:
                builder.close()
        logs_dir = self.data_dir / "logs"
        return replace(
            facts,
            children=children,
            engine_endpoint=self._images.endpoint,
            engine_images=tuple(EngineImage(i, refs) for i, refs in named),
            target_names=tuple(TargetName(c.where, c.stack) for c in copies),
            records=records,
            log_dirs=tuple(
                (kind, folder.name)
                for kind in STACK_LOG_DIRS
                if (logs_dir / kind).is_dir()
                for folder in sorted((logs_dir / kind).iterdir())
                if folder.is_dir()
            ),
            artifacts_dir=str(logs_dir / "artifacts"),
        )

    def _records(
        self, only: str | None
    ) -> tuple[list[str], tuple[StageReleases, ...], tuple[LoggedRecord, ...]]:
        with self._sessions() as session:
            query = select(Stack.id, Stack.name)
            if only is not None:
                query = query.where(Stack.name == only)
            names = dict(session.execute(query).all())
            ids = list(names)
            rows = session.execute(
                select(Release.stack_id, Release.stage, Release.number, Release.digest)
                .where(Release.stack_id.in_(ids))
                .order_by(Release.stack_id, Release.stage, Release.number.desc())
            )
            retired = retired_stages_of(session, ids)
            by_stage: dict[tuple[str, str], list[tuple[int, str]]] = {}
            for stack_id, stage, number, digest in rows:
                if stage in retired.get(stack_id, ()):
                    continue  # stopped by `stages remove`: its releases are history only
                by_stage.setdefault((names[stack_id], stage), []).append((number, digest))
            records: list[LoggedRecord] = []
            if only is None:
                records = _logged_records(session, names)
        releases = tuple(
            StageReleases(
                stack,
                stage,
                tuple(digest for _, digest in found),
                tuple(number for number, _ in found),
            )
            for (stack, stage), found in sorted(by_stage.items())
        )
        return sorted(names.values()), releases, tuple(records)

    def _repositories(self, stacks: list[str] | None) -> tuple[RegistryRepository, ...]:
        """The platform registry's repositories (all, or those of ``stacks``): tags from
        its API, every manifest from its files when the platform runs it."""
        root = registry_storage.storage_root(self.data_dir)
        if stacks is not None:
            names = stacks
        elif root.is_dir():
            names = registry_storage.repositories(root)
        else:
            names = self._images.client.list_repositories()
        found = []
        for name in names:
            tags = self._own_tag_digests(name)
            manifests = registry_storage.manifest_digests(root, name) if root.is_dir() else None
            found.append(RegistryRepository(name, tags, manifests or frozenset(tags.values())))
        return tuple(found)

    def _own_tag_digests(self, repository: str) -> dict[str, str]:
        """Every tag of ``repository`` in the platform's own registry, with its digest
        (not ``ImageStore.all_tag_digests``: that asks a stack's outside registry, and
        retention removes from the platform's own)."""
        client = self._images.client
        try:
            tags = client.list_tags(repository)
        except NotFoundError:
            return {}
        found = {}
        for tag in tags:
            with contextlib.suppress(NotFoundError):
                found[tag] = client.resolve(repository, tag)
        return found

    def _running_digests(self) -> dict[str, frozenset[str]]:
        running: dict[str, set[str]] = {}
        tasks = [*self._engine.list({LABEL_PLATFORM: self._platform_id}), *self._target_tasks()]
        for task in tasks:
            stack = task.labels.get(LABEL_STACK, "")
            if task.digest:
                running.setdefault(stack, set()).add(task.digest)
        return {stack: frozenset(digests) for stack, digests in running.items()}

    def _children(self, facts: RetentionFacts) -> dict[str, tuple[str, ...]]:
        """The manifests each kept index lists (a multi-platform image keeps its parts)."""
        children = {}
        for stack in sorted(facts.stacks):
            for digest in kept_digests(facts, stack):
                try:
                    manifest = self._images.client.get_manifest(stack, digest)
                except StackyardError:
                    continue  # gone already: nothing of it to keep
                if manifest.is_index:
                    children[digest] = tuple(manifest.children())
        return children

    # -- running

    def run(self, *, dry_run: bool = False) -> RetentionReport:
        if not self._running.acquire(blocking=False):
            raise UsageError(
                "retention is running already", hint="wait for it to end, then try again"
            )
        try:
            return self._run(dry_run)
        finally:
            self._running.release()

    def _run(self, dry_run: bool) -> RetentionReport:
        report = RetentionReport(
            keep_releases=self.keep_releases,
            dry_run=dry_run,
            started_at=_now(),
            before=self._measure(None),
        )
        plan = self.plan()
        report.kept = {stack: dict(kept) for stack, kept in plan.kept.items()}
        if dry_run:
            report.manifests = [f"{m.repository}@{m.digest}" for m in plan.manifests]
            self._step(report, "target registries", lambda: self._plan_copies(plan, report))
            report.engine_references = list(plan.engine_references)
            report.files = [*plan.files, *plan.folders]
            report.rotated = [r.path for r in plan_rotations(*self._growing())]
            report.after = report.before
            report.finished_at = _now()
            return report
        with registry_maintenance(self.data_dir, who="retention"):
            self._step(report, "registry manifests", lambda: self._remove_manifests(plan, report))
            self._step(report, "target registries", lambda: self._remove_copies(plan, report))
            self._step(report, "engine images", lambda: self._remove_images(plan, report))
            self._step(report, "record logs", lambda: self._remove_files(plan, report))
            self._step(report, "growing logs", lambda: self._rotate(report))
            collect = self._collect_garbage
            if collect is not None:
                self._step(report, "registry garbage collection", lambda: self._gc(report, collect))
        report.after = self._measure(report)
        report.finished_at = _now()
        self._write(report)
        freed = sum(report.before.values()) - sum(report.after.values())
        log.info(
            "retention removed %d manifest(s), %d engine image reference(s), %d log file(s); "
            "%d bytes freed",
            len(report.manifests),
            len(report.engine_references),
            len(report.files),
            freed,
        )
        return report

    def _step(self, report: RetentionReport, what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # each step is independent: report it, go on
            log.warning("retention: %s failed: %s", what, exc)
            report.errors.append(f"{what}: {exc}")

    def _measure(self, report: RetentionReport | None) -> dict[str, int]:
        try:
            return self.disk_use()
        except StackyardError as exc:
            if report is not None:
                report.errors.append(f"measuring disk use: {exc}")
            return data_dir_use(self.data_dir)

    def _remove_manifests(self, plan: RetentionPlan, report: RetentionReport) -> None:
        by_repository: dict[str, list[ManifestRemoval]] = {}
        for removal in plan.manifests:
            by_repository.setdefault(removal.repository, []).append(removal)
        for repository, removals in by_repository.items():
            remove = functools.partial(self._remove_now, repository, removals, report)
            if repository in plan.kept:
                self._between_builds(repository, remove)
            else:
                remove()

    def _remove_now(
        self, repository: str, removals: list[ManifestRemoval], report: RetentionReport
    ) -> None:
        """Delete what is still not kept: a release or a task may have taken up an old
        image since the plan was made (and none does while this runs)."""
        with self._releases_held(repository):
            fresh = self.observe(only=repository)
            kept = kept_digests(fresh, repository) if repository in fresh.stacks else {}
            for removal in removals:
                if removal.digest in kept:
                    continue
                with contextlib.suppress(NotFoundError):  # gone already (the stack was deleted)
                    self._images.client.delete_manifest(repository, removal.digest)
                report.manifests.append(f"{repository}@{removal.digest}")

    @contextmanager
    def _releases_held(self, stack: str) -> Iterator[None]:
        """Hold the stack's release lock: a rollback copying an old digest to a target's
        registry (or moving a tag to it) until its release is recorded is not cut into by
        a delete of that digest. Says so when a release is under way (it may run a
        release.yml: retention of this stack waits for it)."""
        lock = self._stack_lock(stack)
        if not lock.acquire(blocking=False):
            log.info("retention: %s has a release under way; its deletions wait for it", stack)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def copies(self) -> list[TargetCopies]:
        """Each stack's repository in the registries its stages' targets pull from (other
        than its own), with the digests its releases there copied. A target removed since
        is skipped (its registry is no longer known)."""
        with self._sessions() as session:
            rows = session.execute(
                select(Stack.name, Release.digest, Release.config).join(
                    Stack, Stack.id == Release.stack_id
                )
            ).all()
        released: dict[tuple[str, str], set[str]] = {}
        for stack, digest, config in rows:
            released.setdefault((stack, stage_target_name(config)), set()).add(digest)
        found: dict[tuple[str, str, str], TargetCopies] = {}
        for (stack, target), digests in sorted(released.items()):
            if target == LOCAL_TARGET:
                continue
            try:
                place = self._copy_place(stack, target)
            except NotFoundError:
                log.info("retention: target %s is gone; its copies of %s are not looked at",
                         target, stack)  # fmt: skip
                continue
            if place is None:
                continue
            registry, repository = place
            key = (stack, registry.endpoint, repository)  # two targets may share a registry
            before = found.get(key)
            every = digests | (before.digests if before else frozenset())
            found[key] = TargetCopies(stack, registry, repository, frozenset(every))
        return list(found.values())

    def _plan_copies(self, plan: RetentionPlan, report: RetentionReport) -> None:
        """A dry run: the old copies still there (asked), each as ``host/repository@digest``."""
        for copies in self.copies():
            for digest in sorted(copies.digests - plan.kept.get(copies.stack, {}).keys()):
                try:
                    copies.registry.get_manifest(copies.repository, digest)
                except NotFoundError:
                    continue
                report.manifests.append(f"{copies.where}@{digest}")

    def _remove_copies(self, plan: RetentionPlan, report: RetentionReport) -> None:
        """Delete the copies of releases no longer kept from each target's registry (on the
        stack's build worker, kept digests read again there, as for its own registry); what
        a registry refuses is reported, once per registry, and the others go on."""
        for copies in self.copies():
            if copies.digests <= plan.kept.get(copies.stack, {}).keys():
                continue
            remove = functools.partial(self._remove_copies_now, copies, report)
            self._between_builds(copies.stack, remove)

    def _remove_copies_now(self, copies: TargetCopies, report: RetentionReport) -> None:
        with self._releases_held(copies.stack):
            kept = kept_digests(self.observe(only=copies.stack), copies.stack)
            for digest in sorted(copies.digests - kept.keys()):
                try:
                    copies.registry.delete_manifest(copies.repository, digest)
                except NotFoundError:
                    continue  # deleted by an earlier run, or never copied there
                except StackyardError as exc:
                    report.errors.append(f"copies of {copies.stack} in {copies.where}: {exc}")
                    return  # the registry refuses: its other deletes would say the same
                report.manifests.append(f"{copies.where}@{digest}")

    def _remove_images(self, plan: RetentionPlan, report: RetentionReport) -> None:
        if self._builder_factory is None or not plan.engine_references:
            return
        builder = self._builder_factory()
        try:
            for reference in plan.engine_references:
                if builder.remove_reference(reference):
                    report.engine_references.append(reference)
        finally:
            builder.close()

    def _remove_files(self, plan: RetentionPlan, report: RetentionReport) -> None:
        logs_dir = self.data_dir / "logs"
        for name in [*plan.files, *(str(logs_dir / folder) for folder in plan.folders)]:
            path = Path(name)
            if not path.is_relative_to(self.data_dir):
                continue  # a record of another data dir (a restore moved it): not ours
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            report.files.append(name)

    def _growing(self) -> tuple[dict[str, int], tuple[GrowingLog, ...]]:
        return growing_files(self.data_dir / "logs"), GROWING_LOGS

    def _rotate(self, report: RetentionReport) -> None:
        for rotation in plan_rotations(*self._growing()):
            rotate(rotation)
            report.rotated.append(rotation.path)

    def _gc(self, report: RetentionReport, collect: Callable[[], str]) -> None:
        started = time.monotonic()
        collect()
        report.garbage_collected = True
        report.garbage_collection_seconds = round(time.monotonic() - started, 3)
        log.info("registry garbage collection took %.1f s", report.garbage_collection_seconds)

    def _write(self, report: RetentionReport) -> None:
        path = self.data_dir / RETENTION_REPORT
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)


def _logged_records(session: Session, names: dict[int, str]) -> list[LoggedRecord]:
    records = []
    ids = list(names)
    for kind, model in (("builds", Build), ("runs", PipelineRun)):
        for stack_id, number, log_path in session.execute(
            select(model.stack_id, model.number, model.log_path).where(model.stack_id.in_(ids))
        ):
            records.append(LoggedRecord(kind, names[stack_id], "", number, log_path))
    for kind, staged in (("releases", Release), ("deployments", Deployment)):
        for stack_id, stage, number, log_path in session.execute(
            select(staged.stack_id, staged.stage, staged.number, staged.log_path).where(
                staged.stack_id.in_(ids)
            )
        ):
            records.append(LoggedRecord(kind, names[stack_id], stage, number, log_path))
    return records


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
