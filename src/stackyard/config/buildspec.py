"""Models of a CodeBuild-style build spec (``version: 0.2``) and its loader.

The buildspec runner and the CLI call :func:`load_buildspec`; every error and warning names
the file, line and column it comes from.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from stackyard.config.yamlfile import (
    PathKey,
    Problem,
    YamlDocument,
    load_yaml,
    load_yaml_file,
    raise_problems,
    unknown_keys,
    validation_problems,
)

PHASE_ORDER: tuple[str, ...] = ("install", "pre_build", "build", "post_build")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SHELLS: dict[str, str] = {"sh": "sh", "/bin/sh": "sh", "bash": "bash", "/bin/bash": "bash"}
ON_FAILURE_FORMS = "ABORT, CONTINUE, RETRY, RETRY-<count>, RETRY-<regex>, RETRY-<count>-<regex>"
DEFAULT_RETRIES = 3
_RETRY = re.compile(r"RETRY(?:-(?P<count>\d+))?(?:-(?P<pattern>.+))?", re.DOTALL)

# Keys Stackyard reads but does not act on: path in the file -> why it is ignored.
UNSUPPORTED_KEYS: dict[PathKey, str] = {
    ("cache",): "Stackyard does not keep a build cache between builds; use Docker layer caching",
    ("reports",): "test and coverage reports are not collected",
    ("batch",): "batch builds are not supported; each push runs one build",
    ("proxy",): "the build runs on the Stackyard host's own network",
    ("env", "git-credential-helper"): "the source is checked out by Stackyard before the build",
    ("phases", "install", "runtime-versions"): "the host's installed runtimes are used as they are",
    ("artifacts", "name"): "artifacts are copied into ARTIFACTS_DIR, which has no name setting",
    ("artifacts", "secondary-artifacts"): "only the primary artifact is collected",
    ("artifacts", "exclude-paths"): "every file matched by 'files' is collected",
    ("artifacts", "enable-symlinks"): "symbolic links are copied as the files they point to",
    ("artifacts", "s3-prefix"): "artifacts go to ARTIFACTS_DIR, not to S3",
}


def _scalar_to_text(value: Any) -> Any:
    """YAML numbers and booleans become the text a shell would see; mappings stay as errors."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    return value


def _command_text(value: Any) -> Any:
    if isinstance(value, dict):
        raise ValueError(
            "a command must be a string, but this one was read as a mapping because it "
            "contains ': '; put the whole command in quotes"
        )
    return _scalar_to_text(value)


def _variable_name(value: Any) -> Any:
    if isinstance(value, str) and not VARIABLE_NAME.fullmatch(value):
        raise ValueError(
            f"'{value}' is not a valid variable name: use letters, digits and '_', "
            "not starting with a digit"
        )
    return value


def _version(value: Any) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool):
        value = str(value)
    if value != "0.2":
        raise ValueError(f"unsupported build spec version {value!r}; Stackyard runs version 0.2")
    return value


VariableName = Annotated[str, BeforeValidator(_variable_name)]
Command = Annotated[str, BeforeValidator(_command_text)]
VariableValue = Annotated[str, BeforeValidator(_scalar_to_text)]


@dataclass(frozen=True)
class OnFailure:
    """A parsed ``on-failure`` value: what to do when a phase fails."""

    action: Literal["ABORT", "CONTINUE", "RETRY"]
    retries: int = 0
    pattern: str | None = None


def parse_on_failure(value: str) -> OnFailure:
    """Parse ABORT | CONTINUE | RETRY[-count][-regex]; raise ValueError naming the forms."""
    if value == "ABORT":
        return OnFailure(action="ABORT")
    if value == "CONTINUE":
        return OnFailure(action="CONTINUE")
    match = _RETRY.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid on-failure value {value!r}; allowed: {ON_FAILURE_FORMS}")
    count = int(match["count"]) if match["count"] else DEFAULT_RETRIES
    if count < 1:
        raise ValueError(f"on-failure {value!r}: the retry count must be at least 1")
    pattern = match["pattern"]
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"on-failure {value!r}: invalid regex {pattern!r}: {exc}") from exc
    return OnFailure(action="RETRY", retries=count, pattern=pattern)


class SpecModel(BaseModel):
    """Base of the build spec models: YAML keys are the aliases, unknown keys are warnings."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Phase(SpecModel):
    """One phase: its commands, the commands that always run after them, and failure policy."""

    commands: list[Command] = Field(
        default_factory=list, description="Commands run in order; the first failure stops them."
    )
    finally_: list[Command] = Field(
        default_factory=list,
        alias="finally",
        description="Commands run after 'commands', even when one of them failed.",
    )
    on_failure: str | None = Field(
        default=None,
        alias="on-failure",
        description=f"What to do when the phase fails: {ON_FAILURE_FORMS}.",
    )
    run_as: str | None = Field(
        default=None, alias="run-as", description="Linux user that runs this phase's commands."
    )
    runtime_versions: dict[str, Any] | None = Field(
        default=None,
        alias="runtime-versions",
        description="Install phase only; read but ignored (the host's runtimes are used).",
    )

    @field_validator("on_failure")
    @classmethod
    def _check_on_failure(cls, value: str | None) -> str | None:
        if value is not None:
            parse_on_failure(value)
        return value

    @property
    def failure_policy(self) -> OnFailure | None:
        """The parsed ``on-failure``, or None for CodeBuild's default phase transitions."""
        return parse_on_failure(self.on_failure) if self.on_failure is not None else None


class Phases(SpecModel):
    """The four phases, run in the order install, pre_build, build, post_build."""

    install: Phase | None = Field(default=None, description="Installs tools the build needs.")
    pre_build: Phase | None = Field(default=None, description="Runs before the build (login...).")
    build: Phase | None = Field(default=None, description="Builds the image or the app.")
    post_build: Phase | None = Field(
        default=None, description="Runs after build, even when build failed (unless ABORT)."
    )

    def declared(self) -> list[tuple[str, Phase]]:
        """The phases the spec declares, in run order."""
        found = ((name, getattr(self, name)) for name in PHASE_ORDER)
        return [(name, phase) for name, phase in found if phase is not None]


class Env(SpecModel):
    """The build's shell and environment variables."""

    shell: str | None = Field(
        default=None,
        description="Shell that runs the commands: bash (the default; sh where there is no "
        "bash) or sh.",
    )
    variables: dict[VariableName, VariableValue] = Field(
        default_factory=dict, description="Literal environment variables (no $ expansion)."
    )
    exported_variables: list[VariableName] = Field(
        default_factory=list,
        alias="exported-variables",
        description="Variables whose final values are recorded with the build.",
    )
    secrets_manager: dict[VariableName, str] = Field(
        default_factory=dict,
        alias="secrets-manager",
        description="Environment variable name -> name of a Stackyard secret.",
    )
    parameter_store: dict[VariableName, str] = Field(
        default_factory=dict,
        alias="parameter-store",
        description="Environment variable name -> name of a Stackyard secret.",
    )
    git_credential_helper: Any = Field(
        default=None,
        alias="git-credential-helper",
        description="Not supported: read and ignored with a warning.",
    )

    @field_validator("shell")
    @classmethod
    def _check_shell(cls, value: str | None) -> str | None:
        if value is not None and value not in SHELLS:
            raise ValueError(f"unsupported shell {value!r}; allowed: sh, bash")
        return value

    def secret_references(self) -> dict[str, str]:
        """Every environment variable that takes its value from a secret -> the secret name."""
        return {**self.parameter_store, **self.secrets_manager}


class Artifacts(SpecModel):
    """Files copied into ARTIFACTS_DIR after post_build."""

    files: list[str] = Field(description="Glob patterns ('**' allowed) of the files to collect.")
    base_directory: str | None = Field(
        default=None,
        alias="base-directory",
        description="Directory, relative to the source, that 'files' are relative to.",
    )
    discard_paths: bool | str = Field(
        default=False,
        alias="discard-paths",
        description="yes: copy every file flat into ARTIFACTS_DIR, without its directories.",
    )
    name: Any = Field(default=None, description="Not supported; ignored with a warning.")
    secondary_artifacts: Any = Field(
        default=None, alias="secondary-artifacts", description="Not supported; ignored."
    )
    exclude_paths: Any = Field(
        default=None, alias="exclude-paths", description="Not supported; ignored."
    )
    enable_symlinks: Any = Field(
        default=None, alias="enable-symlinks", description="Not supported; ignored."
    )
    s3_prefix: Any = Field(default=None, alias="s3-prefix", description="Not supported; ignored.")

    @field_validator("discard_paths")
    @classmethod
    def _check_discard(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and value.lower() not in ("yes", "no", "true", "false"):
            raise ValueError(f"discard-paths must be yes or no, not {value!r}")
        return value

    @property
    def flatten(self) -> bool:
        """Whether discard-paths asks for the files without their directories."""
        if isinstance(self.discard_paths, str):
            return self.discard_paths.lower() in ("yes", "true")
        return self.discard_paths


class BuildSpec(SpecModel):
    """A CodeBuild build spec, version 0.2."""

    version: Annotated[str, BeforeValidator(_version)] = Field(
        description="Must be 0.2 (a YAML number or a string)."
    )
    run_as: str | None = Field(
        default=None, alias="run-as", description="Linux user that runs every command."
    )
    env: Env = Field(default_factory=Env, description="Shell and environment variables.")
    phases: Phases = Field(description="The commands to run, by phase.")
    artifacts: Artifacts | None = Field(
        default=None, description="Files to copy into ARTIFACTS_DIR after post_build."
    )
    cache: Any = Field(default=None, description="Not supported; ignored with a warning.")
    reports: Any = Field(default=None, description="Not supported; ignored with a warning.")
    batch: Any = Field(default=None, description="Not supported; ignored with a warning.")
    proxy: Any = Field(default=None, description="Not supported; ignored with a warning.")

    @property
    def shell(self) -> str | None:
        """'sh' or 'bash'; None when the spec names none (the run's default: bash where
        there is one, see CommandShell.default_shell)."""
        return SHELLS[self.env.shell] if self.env.shell else None


def load_buildspec(
    source: Path | str, *, name: str | None = None
) -> tuple[BuildSpec, list[Problem]]:
    """Load a build spec from a file path, or from YAML text when ``source`` is a str.

    Returns the spec and its warnings; raises ConfigError listing every problem with
    ``file:line:col``. ``name`` is how the spec is named in messages (default: the path,
    or ``buildspec`` for text).
    """
    if isinstance(source, Path):
        doc = load_yaml_file(source, name)
    else:
        doc = load_yaml(source, name or "buildspec")
    what = f"build spec {doc.source}"
    if not isinstance(doc.data, Mapping):
        message = "a build spec must be a mapping with 'version' and 'phases'"
        raise_problems([doc.problem((), message)], what=what)
    problems = list(_structure_problems(doc))
    try:
        spec = BuildSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise_problems(problems + validation_problems(doc, exc), what=what)
        raise  # unreachable: raise_problems raised
    raise_problems(problems + _secret_export_problems(doc, spec), what=what)
    unknown = unknown_keys(doc, BuildSpec)
    unknown = [p for p in unknown if p.path[:1] != ("phases",) or len(p.path) != 2]
    return spec, unknown + list(_unsupported_warnings(doc))


def _structure_problems(doc: YamlDocument) -> Iterable[Problem]:
    """Errors that a model cannot see: unknown phase names, runtime-versions outside install."""
    phases = doc.data.get("phases")
    if not isinstance(phases, Mapping):
        return
    for name, phase in phases.items():
        if name not in PHASE_ORDER:
            close = difflib.get_close_matches(str(name), PHASE_ORDER, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            yield doc.problem(
                ("phases", name),
                f"unknown phase '{name}'{hint} (phases: {', '.join(PHASE_ORDER)})",
            )
        elif name != "install" and isinstance(phase, Mapping) and "runtime-versions" in phase:
            yield doc.problem(
                ("phases", name, "runtime-versions"),
                "runtime-versions is only allowed in the install phase",
            )


def _secret_export_problems(doc: YamlDocument, spec: BuildSpec) -> list[Problem]:
    secret_vars = spec.env.secret_references()
    return [
        doc.problem(
            ("env", "exported-variables", i),
            f"'{name}' takes its value from a secret, and secrets cannot be exported",
        )
        for i, name in enumerate(spec.env.exported_variables)
        if name in secret_vars
    ]


def _unsupported_warnings(doc: YamlDocument) -> Iterable[Problem]:
    for path, why in UNSUPPORTED_KEYS.items():
        if _present(doc.data, path):
            yield doc.problem(path, f"'{path[-1]}' is not supported and is ignored: {why}")


def _present(data: Any, path: PathKey) -> bool:
    node = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
