"""Run a build spec's phases locally, the way CodeBuild does, and report the result.

Builds and releases call :func:`run_buildspec`; the CLI's ``stackyard buildspec run`` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from stackyard.buildspec.artifacts import (
    ArtifactError,
    artifacts_base,
    copy_artifacts,
    plan_artifacts,
)
from stackyard.buildspec.buildlog import BuildLog, LineKind, OutputSink
from stackyard.buildspec.environment import (
    declared_variables,
    initial_environment,
    platform_variables,
)
from stackyard.buildspec.process import Account, Command
from stackyard.buildspec.shell import CommandShell, LocalShell
from stackyard.buildspec.shellstate import ShellState, command_script, parse_state
from stackyard.config.buildspec import BuildSpec, OnFailure, Phase
from stackyard.errors import UsageError
from stackyard.secrets.masking import SecretMasker

DEFAULT_COMMAND_TIMEOUT = 60 * 60.0
ARTIFACTS_STEP = "artifacts"


class Status(StrEnum):
    """The outcome of a run, a phase, or the artifacts step."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class RunSettings:
    """What a run needs besides the spec. Variables precede each other: overrides, then
    ``variables`` (stack and stage), then the spec's own; ``platform_variables`` beat all."""

    workdir: Path
    log_path: Path
    variables: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    platform_variables: Mapping[str, str] = field(default_factory=dict)
    artifacts_dir: Path | None = None
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    kill_grace: float = 5.0


@dataclass(frozen=True)
class PhaseResult:
    """One phase (or the artifacts step): its status and the exit status that decided it."""

    name: str
    status: Status
    exit_code: int | None


@dataclass(frozen=True)
class BuildResult:
    """The outcome of a run: status, each declared phase, exported variables, the log file."""

    status: Status
    phases: list[PhaseResult]
    exported: dict[str, str]
    log_path: Path
    artifacts: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON shape of ``stackyard buildspec run --json``."""
        return {
            "status": str(self.status),
            "phases": [
                {"name": p.name, "status": str(p.status), "exit_code": p.exit_code}
                for p in self.phases
            ],
            "exported": dict(self.exported),
        }


def run_buildspec(
    spec: BuildSpec,
    settings: RunSettings,
    sink: OutputSink | None = None,
    shell: CommandShell | None = None,
) -> BuildResult:
    """Run every declared phase in order; stream masked lines to ``sink`` and the log file.

    Commands run in ``shell``: a build container (buildspec/container.py), or this host
    when none is given. Raises UsageError or ConfigError before any command runs when the
    workdir, a secret or a run-as user is missing. A failing command does not raise: the
    result says FAILED.
    """
    masker = SecretMasker(settings.secrets.values())
    with shell if shell is not None else LocalShell() as where:
        settings = replace(settings, workdir=checked_workdir(settings.workdir))
        accounts = _accounts(spec, where)
        with BuildLog(settings.log_path, masker, sink) as log:
            return _Run(spec, settings, accounts, log, where).execute()


def checked_workdir(workdir: Path) -> Path:
    """The workdir, resolved; UsageError when it is not a directory."""
    if not workdir.is_dir():
        raise UsageError(
            f"workdir {workdir} does not exist or is not a directory",
            hint="create it, or pass the directory that holds the source to build",
        )
    return workdir.resolve()


def _accounts(spec: BuildSpec, shell: CommandShell) -> dict[str, Account]:
    """Every run-as user of the spec, looked up now so that a missing one fails early."""
    names = {spec.run_as} | {phase.run_as for _, phase in spec.phases.declared()}
    return {name: shell.account(name) for name in sorted(n for n in names if n)}


def _aborts_later_phases(name: str, policy: OnFailure | None) -> bool:
    """After phase ``name`` failed: whether the phases after it are skipped."""
    if policy is not None and policy.action in ("ABORT", "CONTINUE"):
        return policy.action == "ABORT"
    return name in ("install", "pre_build")


class _Run:
    """One run of a spec: holds the shell state between commands and phases."""

    def __init__(
        self,
        spec: BuildSpec,
        settings: RunSettings,
        accounts: dict[str, Account],
        log: BuildLog,
        shell: CommandShell,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.accounts = accounts
        self.log = log
        self.where = shell
        self.shell = shell.shell_path(spec.shell or shell.default_shell())
        self.succeeding = True
        self.groups: set[int] = set()
        self.exported: dict[str, str] = {}
        self.copied: list[Path] = []
        artifacts = settings.artifacts_dir
        self.platform = platform_variables(
            settings.platform_variables,
            workdir=shell.path_for(settings.workdir),
            artifacts_dir=shell.path_for(artifacts) if artifacts is not None else None,
            succeeding=True,
        )
        declared = declared_variables(
            spec,
            secrets=settings.secrets,
            variables=settings.variables,
            overrides=settings.overrides,
        )
        top = accounts.get(spec.run_as or "")
        home = top.home if top else shell.home()
        env = initial_environment(declared, self._platform(), home=home, tools=shell.tools_path())
        self.state = ShellState(cwd=shell.path_for(settings.workdir), exported=env)

    def execute(self) -> BuildResult:
        self.log.line("run", LineKind.MESSAGE, f"Commands run {self.where.describe()}")
        results: list[PhaseResult] = []
        aborted = False
        for name, phase in self.spec.phases.declared():
            if aborted:
                message = f"Phase {name} skipped: an earlier phase failed"
                self.log.line(name, LineKind.MESSAGE, message)
                results.append(PhaseResult(name, Status.SKIPPED, None))
                continue
            result = self._phase(name, phase)
            results.append(result)
            if name in ("build", "post_build"):
                self.exported = self._exported_values()
            if result.status is Status.FAILED:
                aborted = _aborts_later_phases(name, phase.failure_policy)
        if self.spec.artifacts is not None:
            results.append(self._artifacts(skip=aborted))
        self._stop_leftovers()
        failed = any(r.status is Status.FAILED for r in results)
        status = Status.FAILED if failed else Status.SUCCEEDED
        self.log.line("run", LineKind.MESSAGE, f"Build {status}")
        return BuildResult(status, results, self.exported, self.settings.log_path, self.copied)

    def _platform(self) -> dict[str, str]:
        return {**self.platform, "CODEBUILD_BUILD_SUCCEEDING": "1" if self.succeeding else "0"}

    def _phase(self, name: str, phase: Phase) -> PhaseResult:
        policy = phase.failure_policy
        attempts = 1 + (policy.retries if policy and policy.action == "RETRY" else 0)
        start_state, start_succeeding = self.state, self.succeeding
        status = 0
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self.log.line(name, LineKind.MESSAGE, f"Retrying phase {name}: attempt {attempt}")
                self.state, self.succeeding = start_state, start_succeeding
                self._set_succeeding(start_succeeding)
            self.log.line(name, LineKind.PHASE, f"Entering phase {name}")
            self.log.start_capture()
            status = self._attempt(name, phase)
            if status == 0 or not self._retry_matches(policy):
                break
        outcome = Status.SUCCEEDED if status == 0 else Status.FAILED
        self.log.line(name, LineKind.MESSAGE, f"Phase complete: {name} State: {outcome}")
        return PhaseResult(name, outcome, status)

    def _retry_matches(self, policy: OnFailure | None) -> bool:
        if policy is None or policy.pattern is None:
            return True
        return re.search(policy.pattern, self.log.captured(), re.MULTILINE) is not None

    def _attempt(self, name: str, phase: Phase) -> int:
        account = self.accounts.get(phase.run_as or self.spec.run_as or "")
        status = self._commands(name, phase.commands, account)
        finally_status = self._commands(name, phase.finally_, account)
        return status or finally_status

    def _commands(self, name: str, commands: list[str], account: Account | None) -> int:
        for command in commands:
            status = self._command(name, command, account)
            if status != 0:
                return status
        return 0

    def _command(self, name: str, command: str, account: Account | None) -> int:
        self.log.line(name, LineKind.COMMAND, f"Running command {command}")
        request = Command(
            script=command_script(command, self.state, self.where.state_file(account)),
            shell=self.shell,
            env=dict(self.state.exported),
            cwd=self.state.cwd,
            timeout=self.settings.command_timeout,
            kill_grace=self.settings.kill_grace,
            account=account,
        )
        self.where.hear(lambda notice: self.log.line(name, LineKind.MESSAGE, notice))
        try:
            outcome = self.where.run(request, lambda chunk: self.log.output(name, chunk))
        finally:
            self.where.hear(None)
        self.log.end_output(name)
        if outcome.group is not None:
            self.groups.add(outcome.group)
        dumped = parse_state(outcome.state, outcome.exports, self.state)
        if dumped is not None and not outcome.timed_out:
            self.state = dumped[1]
        self.state = self.state.with_exported(self._platform())
        if outcome.start_error:
            self.log.line(name, LineKind.MESSAGE, outcome.start_error)
        if outcome.status != 0:
            self._report_failure(name, command, outcome.status, outcome.timed_out)
        return outcome.status

    def _report_failure(self, name: str, command: str, status: int, timed_out: bool) -> None:
        if timed_out:
            limit = self.settings.command_timeout
            message = f"Command timed out after {limit:g} seconds and was killed: {command}"
        else:
            message = f"Command did not exit successfully: {command} exit status {status}"
        self.log.line(name, LineKind.MESSAGE, message)
        self._set_succeeding(False)

    def _set_succeeding(self, succeeding: bool) -> None:
        self.succeeding = succeeding
        self.state = self.state.with_exported(self._platform())

    def _exported_values(self) -> dict[str, str]:
        masker = self.log.masker
        return {
            name: masker.mask(self.state.value(name) or "")
            for name in self.spec.env.exported_variables
        }

    def _artifacts(self, *, skip: bool) -> PhaseResult:
        self.copied = []
        target = self.settings.artifacts_dir
        if skip or target is None or self.spec.artifacts is None:
            why = "an earlier phase failed" if skip else "no artifacts directory was given"
            self.log.line(ARTIFACTS_STEP, LineKind.MESSAGE, f"Artifacts not collected: {why}")
            return PhaseResult(ARTIFACTS_STEP, Status.SKIPPED, None)
        try:
            plan = plan_artifacts(self.spec.artifacts, self.settings.workdir)
            base = artifacts_base(self.spec.artifacts, self.settings.workdir)
            self.copied = copy_artifacts(plan, target, base)
        except (ArtifactError, OSError) as exc:
            self.log.line(ARTIFACTS_STEP, LineKind.MESSAGE, f"Artifacts failed: {exc}")
            return PhaseResult(ARTIFACTS_STEP, Status.FAILED, 1)
        count = len(self.copied)
        self.log.line(ARTIFACTS_STEP, LineKind.MESSAGE, f"Copied {count} artifact(s) to {target}")
        return PhaseResult(ARTIFACTS_STEP, Status.SUCCEEDED, 0)

    def _stop_leftovers(self) -> None:
        for group in self.where.stop_leftovers(sorted(self.groups)):
            self.log.line("run", LineKind.MESSAGE, f"Stopped background processes of group {group}")
