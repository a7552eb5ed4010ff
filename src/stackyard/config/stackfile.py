"""The ``stackyard.yml`` models, loading with per-stage override files, and the reference doc.

Used by the ``stackyard config`` commands, and by builds and deployments to read a stack's stages.
"""

from __future__ import annotations

import copy
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from stackyard.config.yamlfile import (
    PathKey,
    Position,
    Problem,
    YamlDocument,
    load_yaml_file,
    raise_problems,
    unknown_keys,
    validation_problems,
)
from stackyard.errors import ConfigError, NotFoundError

DEFAULT_FILE = "stackyard.yml"
MIN_MEMORY_BYTES = 6 * 1024**2  # Docker refuses a memory limit below 6 MiB.
DEFAULT_SOURCE = "(default stackyard.yml)"

# Variables the platform sets in builds, releases and tasks; a user cannot override them.
RESERVED_VARIABLES = frozenset(
    {
        "STACK_NAME",
        "STAGE_NAME",
        "PREVIOUS_STAGE_NAME",
        "COMMIT_SHA",
        "REGISTRY_ENDPOINT",
        "IMAGE_URL",
        "ARTIFACTS_DIR",
        "ECR_ENDPOINT",
        "ECR_IMAGE_URL",
        "S3_BUCKET",
    }
)
RESERVED_PREFIX = "CODEBUILD_"

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|(b))?", re.IGNORECASE)
_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m)")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class DocType:
    """How the reference doc names a field's type when the annotation alone says too little."""

    text: str


# ---------------------------------------------------------------------------------------------
# Value types


def _check_variable_name(name: str) -> str:
    if not _VARIABLE_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid variable name: use letters, digits and _, "
            "and do not start with a digit"
        )
    if name in RESERVED_VARIABLES or name.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"'{name}' is set by Stackyard and cannot be overridden; pick another name"
        )
    return name


def _variable_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        raise ValueError('a variable needs a value; write "" for an empty one')
    if isinstance(value, dict | list):
        raise ValueError("a variable value must be a string or number, not a mapping or list")
    return value


def _check_stage_name(name: str) -> str:
    if len(name) > 63 or not _STAGE_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid stage name: use 1 to 63 lowercase letters, digits and "
            "'-', starting with a letter or digit"
        )
    if name == "latest":
        raise ValueError("'latest' is the tag of the newest build; pick another stage name")
    return name


def _check_stack_name(name: str) -> str:
    if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise ValueError(
            f"'{name}' is not a valid stack name: use 1 to 63 lowercase letters, digits and "
            "'-', not starting or ending with '-'"
        )
    return name


def _check_host(host: str) -> str:
    labels = host.split(".")
    if len(host) > 253 or not all(len(lb) <= 63 and _DNS_LABEL.fullmatch(lb) for lb in labels):
        raise ValueError(
            f"'{host}' is not a valid host name: use lowercase labels of letters, digits and "
            "'-' separated by dots, such as app.example.com"
        )
    return host


def _check_relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"'{value}' must be a path inside the repository: relative, without '..'")
    return value


def _check_container_path(value: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(
            f"'{value}' must be an absolute path inside the container, such as /app/.env"
        )
    return value


def memory_bytes(value: str | int) -> int:
    """Bytes in a Docker-style size: ``256m``, ``1g``, ``1.5GiB``; a bare number is bytes."""
    match = _MEMORY.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(
            f"'{value}' is not a memory size: write a number and a unit, such as 256m or 1g "
            "(units b, k, m, g, t; 1k = 1024 bytes)"
        )
    number, unit, byte_unit = match.groups()
    return int(float(number) * _UNITS[(unit or byte_unit or "").lower()])


def _check_memory(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value  # the str type check below reports it
    size = memory_bytes(value)
    if size < MIN_MEMORY_BYTES:
        raise ValueError(
            f"'{value}' is {size} bytes, below Docker's minimum of 6m; write a unit, such as 256m"
        )
    return str(value).strip()


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        match = _SECONDS.fullmatch(value.strip())
        if match is None:
            raise ValueError(
                f"'{value}' is not a duration: write seconds as a number, or a string such as "
                "500ms, 5s or 1m"
            )
        number, unit = match.groups()
        return float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return value


VariableName = Annotated[str, AfterValidator(_check_variable_name)]
VariableValue = Annotated[str, BeforeValidator(_variable_value)]
Variables = Annotated[
    dict[VariableName, VariableValue],
    DocType("mapping of variable name to string"),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }
    ),
]
StageName = Annotated[
    str,
    AfterValidator(_check_stage_name),
    DocType("string: a lowercase DNS label"),
    WithJsonSchema({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 63}),
]
RepoPath = Annotated[str, AfterValidator(_check_relative_path), DocType("path in the repository")]
Memory = Annotated[
    str,
    BeforeValidator(_check_memory),
    DocType("memory size"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([kmgtKMGT][iI]?[bB]?|[bB])?$"},
                {"type": "integer", "minimum": MIN_MEMORY_BYTES},
            ]
        }
    ),
]
Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    Strict(),
    DocType("duration in seconds"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m)$"},
            ]
        }
    ),
]
StrictInt = Annotated[int, Strict()]


# ---------------------------------------------------------------------------------------------
# Models

_MODEL_CONFIG = ConfigDict(extra="ignore", populate_by_name=True)


class BuildConfig(BaseModel):
    """How the stack's image is built: one build per commit, promoted through the stages."""

    model_config = _MODEL_CONFIG

    context: RepoPath = Field(
        default=".",
        description="Docker build context, relative to the repository root. In a monorepo, "
        "the service's directory.",
        examples=["services/api"],
    )
    dockerfile: RepoPath = Field(
        default="Dockerfile",
        description="Dockerfile, relative to `context`. When it does not exist and there is "
        "no build spec, Stackyard generates one (auto-dockerize).",
        examples=["docker/Dockerfile.prod"],
    )
    buildspec: RepoPath = Field(
        default="build.yml",
        description="Build spec (CodeBuild `version: 0.2`), relative to `context`. When it "
        "does not exist, Stackyard runs the default spec: a docker build of `dockerfile`.",
        examples=["ci/build.yml"],
    )
    releasespec: RepoPath = Field(
        default="release.yml",
        description="Release spec, relative to `context`, run for each stage before it is "
        "deployed. When it does not exist, the stage's tag is pointed at the digest of the "
        "previous stage.",
        examples=["ci/release.yml"],
    )
    variables: Variables = Field(
        default_factory=dict,
        description="Build variables. They override the build spec's own `env.variables`; "
        "values given for one run override them. Numbers and booleans become strings "
        "(`true`/`false`). Changing one triggers a rebuild.",
        examples=[{"NODE_ENV": "production"}],
    )
    paths: list[Annotated[str, AfterValidator(_check_relative_path)]] | None = Field(
        default=None,
        description="Path filter for monorepos: glob patterns relative to the repository "
        "root (`**` matches across directories). A push starts a pipeline run only when it "
        "changes a matching path. Not set: every push does.",
        examples=[["services/api/**", "libs/shared/**"]],
    )

    @property
    def dockerfile_path(self) -> PurePosixPath:
        """The Dockerfile relative to the repository root."""
        return PurePosixPath(self.context) / self.dockerfile

    @property
    def buildspec_path(self) -> PurePosixPath:
        """The build spec relative to the repository root."""
        return PurePosixPath(self.context) / self.buildspec

    @property
    def releasespec_path(self) -> PurePosixPath:
        """The release spec relative to the repository root."""
        return PurePosixPath(self.context) / self.releasespec


class HealthCheckConfig(BaseModel):
    """When a new task may take traffic: after it passes its health check once."""

    model_config = _MODEL_CONFIG

    type: Literal["http", "docker"] = Field(
        default="http",
        description="`http`: Stackyard sends GET `path` to the task and wants a 2xx or 3xx "
        "answer. `docker`: Stackyard waits for the image's own `HEALTHCHECK` to report "
        "healthy (a task whose image has none is healthy once it runs); `path` does not apply.",
        examples=["docker"],
    )
    path: str = Field(
        default="/",
        description="HTTP path to check, starting with `/`. Only for `type: http`.",
        examples=["/healthz"],
    )
    interval: Seconds = Field(
        default=2.0,
        gt=0,
        description="Time between two checks of one task.",
        examples=["5s"],
    )
    timeout: Seconds = Field(
        default=2.0,
        gt=0,
        description="How long one HTTP check may take before it counts as failed.",
        examples=[1.5],
    )
    retries: StrictInt = Field(
        default=3,
        ge=1,
        description="Failed checks in a row, after the start period, that make a task "
        "unhealthy; a new task that turns unhealthy counts as failed for the circuit breaker.",
        examples=[5],
    )
    start_period: Seconds = Field(
        default=10.0,
        ge=0,
        description="Grace time after a task starts: failed checks do not count yet, and a "
        "passing check makes the task healthy at once.",
        examples=["30s"],
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("to use the image's HEALTHCHECK instead, set health.type: docker")
        if isinstance(value, str) and not value.startswith("/"):
            raise ValueError(f"'{value}' must start with '/', such as /healthz")
        return value

    @model_validator(mode="after")
    def _path_only_for_http(self) -> HealthCheckConfig:
        # A stored snapshot repeats the default "/"; only a path someone chose is a mistake.
        if self.type == "docker" and "path" in self.model_fields_set and self.path != "/":
            raise ValueError("health.path applies only to type: http; remove it, or set type: http")
        return self

    @property
    def uses_image_healthcheck(self) -> bool:
        return self.type == "docker"


class DeployConfig(BaseModel):
    """How a rolling deployment replaces a stage's tasks (ECS semantics)."""

    model_config = _MODEL_CONFIG

    minimum_healthy_percent: StrictInt = Field(
        default=100,
        ge=0,
        le=100,
        description="Lower bound on healthy tasks serving during a deployment, as a percent "
        "of `replicas` (rounded up). 100 means never serve with fewer than `replicas`.",
        examples=[50],
    )
    maximum_percent: StrictInt = Field(
        default=200,
        ge=100,
        description="Upper bound on tasks running during a deployment, old and new, as a "
        "percent of `replicas` (rounded down). 200 means start all new tasks first.",
        examples=[150],
    )
    drain_seconds: Seconds = Field(
        default=2.0,
        ge=0,
        description="After an old task leaves the router, how long it keeps running to finish "
        "its requests before it gets SIGTERM.",
        examples=["15s"],
    )
    stop_timeout: Seconds = Field(
        default=10.0,
        ge=0,
        description="After SIGTERM, how long a task may take to exit before it gets SIGKILL.",
        examples=[30],
    )


class EnvFileConfig(BaseModel):
    """A file the stage's tasks receive, rendered from a template with its variables and secrets."""

    model_config = _MODEL_CONFIG

    template: RepoPath = Field(
        description="Jinja2 template, relative to the repository root; `{{ NAME }}` is "
        "replaced with the stage's variable or secret NAME, and a name that is not defined "
        "fails the release.",
        examples=["deploy/app.env.j2"],
    )
    path: Annotated[str, AfterValidator(_check_container_path)] = Field(
        default="/run/stackyard/env",
        description="Absolute path inside the container where the rendered file is written "
        "before the task starts (mode 0600, owned by root); never into the repo or the image.",
        examples=["/app/.env"],
    )


class StageConfig(BaseModel):
    """One ordered environment of the stack, such as dev, staging or prod."""

    model_config = _MODEL_CONFIG

    name: StageName = Field(
        description="Stage name, unique in the stack: 1 to 63 lowercase letters, digits and "
        "`-`. It is also the registry tag that points at the stage's image. `latest` is taken.",
        examples=["prod"],
    )
    promotion: Literal["auto", "approval"] = Field(
        default="auto",
        description="How a build reaches this stage after the previous one succeeds: `auto`, "
        "or `approval` (it waits until someone approves). For the first stage, the gate "
        "is between the build and the stage.",
        examples=["approval"],
    )
    replicas: StrictInt = Field(
        default=1,
        ge=0,
        description="Number of tasks (containers) to run. 0 stops the stage and keeps its "
        "releases.",
        examples=[3],
    )
    cpu: Annotated[float, Strict()] = Field(
        default=0.5,
        gt=0,
        description="CPU limit per task, in cores.",
        examples=[2],
    )
    memory: Memory = Field(
        default="256m",
        description="Memory limit per task; a task that goes over it is killed and replaced.",
        examples=["1g"],
    )
    container_port: StrictInt = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Port the app listens on inside the container when tasks use bridge "
        "networking; Stackyard sets `PORT` to it and publishes it on a loopback port. With "
        "host networking (the default) each task gets its own port, passed as `PORT`, and "
        "this value is not used.",
        examples=[3000],
    )
    port: StrictInt | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on 127.0.0.1 where the router serves this stage; the stage keeps "
        "it across deployments. Not with `host`. When neither is set, Stackyard picks a "
        "free port at the first deployment and keeps it.",
        examples=[8081],
    )
    host: Annotated[str, AfterValidator(_check_host)] | None = Field(
        default=None,
        description="Host name the router serves this stage on, on its HTTP and HTTPS "
        "ports. Not with `port`.",
        examples=["app.example.com"],
    )
    health: HealthCheckConfig = Field(
        default_factory=HealthCheckConfig,
        description="Health check that gates traffic to new tasks.",
        examples=[{"type": "http", "path": "/healthz"}],
    )
    deploy: DeployConfig = Field(
        default_factory=DeployConfig,
        description="Rolling deployment settings.",
        examples=[{"minimum_healthy_percent": 50, "maximum_percent": 150}],
    )
    variables: Variables = Field(
        default_factory=dict,
        description="Runtime variables of the tasks. Keep secrets out of this file: "
        "Stackyard stores them encrypted, apart from it. Changing a variable makes a new "
        "release with the same image.",
        examples=[{"LOG_LEVEL": "info"}],
    )
    env_file: EnvFileConfig | None = Field(
        default=None,
        description="Optional file rendered from a template and mounted into each task, for "
        "apps that read a .env file instead of their environment.",
        examples=[{"template": "deploy/app.env.j2", "path": "/app/.env"}],
    )

    @model_validator(mode="after")
    def _cross_fields(self) -> StageConfig:
        if self.port is not None and self.host is not None:
            raise ValueError(
                f"stage '{self.name}' sets both port and host; keep one: port serves on "
                "127.0.0.1, host serves a host name"
            )
        problem = rollout_problem(
            self.replicas, self.deploy.minimum_healthy_percent, self.deploy.maximum_percent
        )
        if problem:
            raise ValueError(f"stage '{self.name}': {problem}")
        return self

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)

    @property
    def route(self) -> str:
        """Where the router serves the stage: ``127.0.0.1:8081``, a host name, or ``auto port``."""
        if self.host is not None:
            return self.host
        if self.port is not None:
            return f"127.0.0.1:{self.port}"
        return "auto port"


def rollout_problem(
    replicas: int, minimum_healthy_percent: int, maximum_percent: int
) -> str | None:
    """Why a rolling deployment with these bounds could never progress, or None when it can.

    A deployment progresses when it may either start one task over the minimum healthy count,
    or stop one: floor(replicas * max%) - ceil(replicas * min%) must be at least 1.
    """
    if replicas == 0:
        return None
    floor_tasks = math.ceil(replicas * minimum_healthy_percent / 100)
    ceiling_tasks = math.floor(replicas * maximum_percent / 100)
    if ceiling_tasks - floor_tasks >= 1:
        return None
    need_max = math.ceil(100 * (floor_tasks + 1) / replicas)
    need_min = math.floor(100 * (ceiling_tasks - 1) / replicas)
    return (
        f"with replicas {replicas}, minimum_healthy_percent {minimum_healthy_percent} and "
        f"maximum_percent {maximum_percent}, a deployment can neither start a new task nor "
        f"stop an old one; raise deploy.maximum_percent to {need_max} or more, or lower "
        f"deploy.minimum_healthy_percent to {need_min} or less"
    )


def default_stages() -> list[StageConfig]:
    """dev and staging promote automatically; prod waits for an approval."""
    return [
        StageConfig(name="dev"),
        StageConfig(name="staging"),
        StageConfig(name="prod", promotion="approval"),
    ]


class StackConfig(BaseModel):
    """The whole stackyard.yml: how the stack is built, and its stages in promotion order."""

    model_config = _MODEL_CONFIG

    name: Annotated[str, AfterValidator(_check_stack_name)] | None = Field(
        default=None,
        description="Stack name, for people and for `stackyard config check`. The name the "
        "stack was registered with wins when they differ.",
        examples=["shop-api"],
    )
    build: BuildConfig = Field(
        default_factory=BuildConfig,
        description="How the image is built.",
        examples=[{"context": "services/api"}],
    )
    stages: list[StageConfig] = Field(
        default_factory=default_stages,
        description="Stages in promotion order: a build is deployed to the first, then "
        "promoted to each next one. Not set: `dev`, `staging`, and `prod` with "
        "`promotion: approval`.",
        examples=[[{"name": "staging"}, {"name": "prod", "promotion": "approval"}]],
    )

    @field_validator("stages")
    @classmethod
    def _stages(cls, stages: list[StageConfig]) -> list[StageConfig]:
        if not stages:
            raise ValueError("a stack needs at least one stage, such as - name: prod")
        seen: dict[str, int] = {}
        for index, stage in enumerate(stages):
            if stage.name in seen:
                raise ValueError(
                    f"stage name '{stage.name}' is used twice (stages[{seen[stage.name]}] and "
                    f"stages[{index}]); rename one"
                )
            seen[stage.name] = index
        return stages

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def stage(self, name: str) -> StageConfig:
        """The stage called ``name``; NotFoundError naming the valid stages otherwise."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise NotFoundError(
            f"stage '{name}' does not exist in this stack",
            hint=f"valid stages: {', '.join(self.stage_names)}",
        )

    def previous_stage_name(self, name: str) -> str:
        """The stage before ``name``, or ``latest`` (the newest build) for the first stage."""
        index = self.stage_names.index(self.stage(name).name)
        return "latest" if index == 0 else self.stages[index - 1].name


def json_schema() -> dict[str, Any]:
    """JSON Schema of stackyard.yml, for editors (unknown keys are allowed, with a warning)."""
    schema = StackConfig.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "stackyard.yml",
        **{k: v for k, v in schema.items() if k != "title"},
    }


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedConfig:
    """A validated stack configuration, its warnings, and the files it came from."""

    config: StackConfig
    warnings: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    is_default: bool = False


@dataclass
class _MergedDocument(YamlDocument):
    """The base document with override files merged into some stages.

    A problem points into the override file when the value it is about came from there.
    """

    overrides: dict[int, YamlDocument] = field(default_factory=dict)

    def problem(self, path: PathKey, message: str) -> Problem:
        if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], int):
            override = self.overrides.get(path[1])
            if override is not None:
                inner = path[2:]
                if inner and inner in override.positions:
                    return override.problem(inner, message)
                found = super().problem(path, message)
                return Problem(
                    found.source,
                    found.path,
                    found.position,
                    f"{found.message} (after merging {override.source})",
                )
        return super().problem(path, message)


def load_stack_config(repo_dir: Path, *, file: str = DEFAULT_FILE) -> LoadedConfig:
    """Load ``file`` (relative to ``repo_dir``) and its ``<stem>.<stage>.yml`` override files.

    Without the file, a repository gets the default stages (dev, staging, prod), unless
    ``file`` names a file other than the default, which must then exist.
    Raises ConfigError listing every problem with file:line:col.
    """
    base_path = repo_dir / file
    if base_path.is_file():
        doc = load_yaml_file(base_path)
        if doc.data is None:
            doc.data = {}
        is_default = False
    elif file == DEFAULT_FILE and not (repo_dir / "stackyard.yaml").exists():
        doc = YamlDocument(DEFAULT_SOURCE, {})
        is_default = True
    else:
        raise ConfigError(_missing_message(repo_dir, file))
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"{doc.source}: the file must be a mapping with keys such as build and stages, "
            f"not a {type(doc.data).__name__}"
        )
    warnings = unknown_keys(doc, StackConfig)
    override_files = find_override_files(base_path)
    merged, override_warnings = _merge_overrides(doc, override_files)
    warnings += override_warnings
    config = _validate(merged, warnings)
    files = ([] if is_default else [base_path]) + [path for _, path in override_files]
    return LoadedConfig(config, warnings, files, is_default)


def _missing_message(repo_dir: Path, file: str) -> str:
    if file == DEFAULT_FILE:
        return f"{repo_dir / 'stackyard.yaml'}: Stackyard reads stackyard.yml; rename the file"
    return f"{repo_dir / file}: no such file"


def find_override_files(base_path: Path) -> list[tuple[str, Path]]:
    """``(stage name, path)`` of each ``<stem>.<stage>.yml`` next to ``base_path``, sorted."""
    stem, suffix = base_path.stem, base_path.suffix or ".yml"
    found = []
    if not base_path.parent.is_dir():
        return []
    for path in sorted(base_path.parent.glob(f"{stem}.*{suffix}")):
        stage = path.name[len(stem) + 1 : -len(suffix)]
        if stage and path.is_file():
            found.append((stage, path))
    return found


def _merge_overrides(
    doc: YamlDocument, override_files: list[tuple[str, Path]]
) -> tuple[_MergedDocument, list[Problem]]:
    data = copy.deepcopy(doc.data)
    if "stages" not in data:
        data["stages"] = [stage.model_dump(exclude_defaults=True) for stage in default_stages()]
    merged = _MergedDocument(doc.source, data, doc.positions)
    stages = data["stages"]
    if not override_files or not isinstance(stages, list):
        return merged, []
    index_of = {
        stage["name"]: i
        for i, stage in enumerate(stages)
        if isinstance(stage, dict) and isinstance(stage.get("name"), str)
    }
    warnings: list[Problem] = []
    for stage_name, path in override_files:
        if stage_name not in index_of:
            valid = ", ".join(str(name) for name in index_of)
            raise ConfigError(
                f"{path}: override file for stage '{stage_name}', which is not a stage of "
                f"{doc.source}",
                hint=f"valid stages: {valid}; name the file {path.name.split('.')[0]}"
                f".<stage>{path.suffix}, or add the stage",
            )
        override = _load_override(path, stage_name)
        warnings += unknown_keys(override, StageConfig)
        index = index_of[stage_name]
        stages[index] = deep_merge(stages[index], override.data)
        merged.overrides[index] = override
    return merged, warnings


def _load_override(path: Path, stage_name: str) -> YamlDocument:
    override = load_yaml_file(path)
    if override.data is None:
        override.data = {}
    if not isinstance(override.data, dict):
        raise ConfigError(
            f"{path}: an override file must be a mapping of the stage's own keys, such as "
            f"cpu: 2, not a {type(override.data).__name__}"
        )
    misplaced = sorted({"build", "stages"} & override.data.keys())
    if misplaced:
        raise ConfigError(
            f"{path}: {', '.join(misplaced)}: an override file holds the keys of stage "
            f"'{stage_name}' only, at its top level",
            hint="write the stage's keys directly, such as cpu: 2; build settings stay in "
            "stackyard.yml",
        )
    name = override.data.get("name", stage_name)
    if name != stage_name:
        pos = override.position_of(("name",)) or Position(1, 1)
        raise ConfigError(
            f"{path}:{pos.line}:{pos.column}: name: '{name}' differs from the stage "
            f"'{stage_name}' the file name gives",
            hint="remove the name key; the file name says which stage it overrides",
        )
    return override


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` over ``base``: mappings merge key by key, anything else replaces.

    A key set to null in ``override`` is removed, so the field returns to its default.
    """
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    result = dict(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = deep_merge(result.get(key), value)
    return result


def _validate(doc: _MergedDocument, warnings: list[Problem]) -> StackConfig:
    """Validate the merged data; the error lists every problem, then the warnings."""
    try:
        return StackConfig.model_validate(doc.data)
    except ValidationError as exc:
        overrides = ", ".join(sorted(o.source for o in doc.overrides.values()))
        what = f"{doc.source} (with {overrides})" if overrides else doc.source
        try:
            raise_problems(validation_problems(doc, exc), what=what)
        except ConfigError as error:
            message = error.message
            if warnings:
                message += "\nwarnings:\n" + "\n".join(f"  {w}" for w in warnings)
            raise ConfigError(
                message, hint="fix the keys named above, then run: stackyard config check"
            ) from exc
        raise  # unreachable: raise_problems raised


# ---------------------------------------------------------------------------------------------
# Reference doc


@dataclass(frozen=True)
class DocumentedField:
    """One key of stackyard.yml as the reference shows it."""

    key_path: str
    name: str
    info: FieldInfo
    model: type[BaseModel]


def documented_fields(
    model: type[BaseModel] = StackConfig, prefix: str = ""
) -> Iterator[DocumentedField]:
    """Every key of stackyard.yml, depth first, with its dotted path (``stages[].health.path``)."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        key_path = f"{prefix}{key}"
        yield DocumentedField(key_path, key, info, model)
        child = _child_model(info.annotation)
        if child is not None:
            suffix = "[]." if typing.get_origin(_unoptional(info.annotation)) is list else "."
            yield from documented_fields(child, key_path + suffix)


def _unoptional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _child_model(annotation: Any) -> type[BaseModel] | None:
    inner = _unoptional(annotation)
    if typing.get_origin(inner) is list:
        inner = typing.get_args(inner)[0]
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def _type_text(info: FieldInfo) -> str:
    text = next((m.text for m in info.metadata if isinstance(m, DocType)), None)
    if text is None:
        text = _annotation_text(info.annotation)
    bounds = []
    for meta in info.metadata:
        # pydantic keeps ge=, gt=, le=, lt= as annotated_types objects with that one attribute.
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if type(meta).__name__ == attr.capitalize() and hasattr(meta, attr):
                bounds.append(f"{sign} {getattr(meta, attr)}")
    if bounds:
        text += f" ({' and '.join(bounds)})"
    return f"{text}, optional" if _unoptional(info.annotation) is not info.annotation else text


def _annotation_text(annotation: Any) -> str:
    inner = _unoptional(annotation)
    origin = typing.get_origin(inner)
    names: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if origin is Literal:
        text = " | ".join(f"`{value}`" for value in typing.get_args(inner))
    elif origin is Annotated:
        text = _annotation_text(typing.get_args(inner)[0])
    elif origin is list:
        item = typing.get_args(inner)[0]
        text = "list of mappings" if _child_model(item) else f"list of {_annotation_text(item)}s"
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        text = "mapping"
    else:
        text = names.get(inner, getattr(inner, "__name__", str(inner)))
    return text


def _default_text(item: DocumentedField) -> str:
    info = item.info
    if info.is_required():
        return "required"
    if item.key_path == "stages":
        return "`dev`, `staging`, `prod` (see [No stackyard.yml](#no-stackyardyml))"
    factory = typing.cast(Callable[[], Any] | None, info.default_factory)
    value = factory() if factory is not None else info.default
    if value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "all defaults"
    return f"`{_flow_yaml(value)}`"


_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./*@ -]*")
_NOT_PLAIN = re.compile(
    r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|true|false|yes|no|on|off|null|~", re.I
)


def _flow_yaml(value: Any) -> str:
    """``value`` in YAML flow style, for one-line examples and defaults."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow_yaml(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NOT_PLAIN.fullmatch(text) and text == text.strip():
        return text
    return json.dumps(text)


def _example_text(item: DocumentedField) -> str:
    example = (item.info.examples or [None])[0]
    return f"`{item.name}: {_flow_yaml(example)}`"


_INTRO = """\
# stackyard.yml reference

<!-- Generated from src/stackyard/config/stackfile.py by scripts/gen-config-reference.
     Do not edit by hand: change the models, then run
     .venv/bin/python scripts/gen-config-reference -->

`stackyard.yml` sits at the root of the repository (or where the stack's config file
setting points, in a monorepo). It says how the stack's image is built and lists the
stages a build is promoted through. Check a file with `stackyard config check [PATH]`;
`stackyard config schema` prints a JSON Schema for editors.

Keys are snake_case. An unknown key is a warning that names the closest valid key; a
value of the wrong type or out of range is an error that names the key and its
`file:line:column`. `stackyard config check` exits with status 2 when the file is invalid.

## No stackyard.yml

A repository without `stackyard.yml` gets every default below and three stages:
`dev` and `staging` (`promotion: auto`) and `prod` (`promotion: approval`). A
`stackyard.yml` without a `stages` key gets the same three stages.

## Per-stage override files

`stackyard.<stage>.yml`, next to `stackyard.yml`, holds keys of that one stage at its top
level, and is merged over the stage's entry in `stages`. For example, a
`stackyard.prod.yml` of

```yaml
cpu: 2
memory: 1g
deploy:
  drain_seconds: 15
```

changes only `prod`, and only those keys: mappings merge key by key, while lists and
plain values replace. A key set to `null` in an override file returns to its default.
The override file may repeat `name`, but it must match the stage in the file name. An
override file for a stage that does not exist is an error. Override files also apply
to the default stages.

## Durations and sizes

Durations are seconds: a number (`2`, `0.5`) or a string with a unit (`500ms`, `5s`,
`1m`). Memory sizes are a number and a unit, `b`, `k`, `m`, `g` or `t`, in powers of
1024 as in Docker (`256m`, `1g`, `1.5GiB`); the smallest is `6m`.

## Health checks

`health.type: http` (the default) sends `GET health.path` to each new task, and the
task takes traffic once one check passes. `health.type: docker` uses the image's own
`HEALTHCHECK` instead; an image without one is healthy once its container runs.

## Rolling deployments

During a deployment a stage runs at most `replicas * maximum_percent / 100` tasks
(rounded down) and keeps at least `replicas * minimum_healthy_percent / 100` healthy
tasks serving (rounded up). The gap must be at least one task, or the deployment
could neither start a new task nor stop an old one: with `minimum_healthy_percent:
100`, `maximum_percent` must leave room for one more task. The check names the value
to change.

## Keys
"""


def render_reference(example: str) -> str:
    """The Markdown reference of every key, followed by ``example`` (a complete stackyard.yml)."""
    parts = [_INTRO]
    for item in documented_fields():
        parts.append(
            f"\n### `{item.key_path}`\n\n"
            f"{item.info.description}\n\n"
            f"- Type: {_type_text(item.info)}\n"
            f"- Default: {_default_text(item)}\n"
            f"- Example: {_example_text(item)}\n"
        )
    parts.append(
        "\n## Complete example\n\n"
        "This file is `docs/examples/stackyard.yml`; a test checks that it is valid and "
        "uses every key.\n\n"
        f"```yaml\n{example.rstrip()}\n```\n"
    )
    return "".join(parts)
