"""The ``stackyard.yml`` models: a stack's build settings and its stages, with their rules.

Loaded by loading.py; builds, releases and deployments read a stack's stages from them.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stackyard.config.values import (
    Constraint,
    ContainerPath,
    HostName,
    Memory,
    PathPattern,
    RepoPath,
    Seconds,
    StackName,
    StageName,
    StrictFloat,
    StrictInt,
    TargetName,
    Variables,
    memory_bytes,
)
from stackyard.errors import NotFoundError, UsageError
from stackyard.images.reference import ImageReference

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
    image: str | None = Field(
        default=None,
        description="Image the build spec and release spec run in, when they need tools "
        "the build image lacks. Not set: the platform's build image (`stackyard/build:"
        "bookworm`: a shell, git, the docker CLI, curl, jq). It needs `/bin/sh`, `env` "
        "and `setsid` (Debian, Ubuntu and Alpine images have them), and the engine must "
        "have it: a build does not pull it.",
        examples=["node:22-slim"],
    )
    cpu: StrictFloat | None = Field(
        default=None,
        gt=0,
        description="CPU limit of the build container (the build spec, the release spec and "
        "their `docker build` steps), in cores. At most the platform's build limit "
        "(`--build-cpus`): a build asking for more fails, naming it. Not set: the "
        "platform's.",
        examples=[1],
    )
    memory: Memory | None = Field(
        default=None,
        description="Memory limit of the build container, without swap. At most the "
        "platform's (`--build-memory`). Not set: the platform's.",
        examples=["1g"],
    )
    pids_limit: StrictInt | None = Field(
        default=None,
        ge=16,
        description="Most processes and threads the build container may run at once. At "
        "most the platform's (`--build-pids`). Not set: the platform's.",
        examples=[512],
    )
    paths: list[PathPattern] | None = Field(
        default=None,
        description="Path filter for monorepos: glob patterns relative to the repository "
        "root (`**` matches across directories). A push starts a pipeline run only when it "
        "changes a matching path. Not set: every push does.",
        examples=[["services/api/**", "libs/shared/**"]],
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ImageReference.parse(value)
            except UsageError as exc:
                raise ValueError(exc.message) from None
        return value

    @property
    def memory_bytes(self) -> int | None:
        return memory_bytes(self.memory) if self.memory is not None else None

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


class PlacementConfig(BaseModel):
    """Where the stage's tasks may run, on a cluster engine (`stackyard up --engine swarm`)."""

    model_config = _MODEL_CONFIG

    constraints: list[Constraint] = Field(
        default_factory=list,
        description="Swarm placement constraints, all of which a node must satisfy to run "
        "the stage's tasks: `node.labels.<name>`, `engine.labels.<name>`, `node.id`, "
        "`node.hostname`, `node.role`, `node.platform.os`, `node.platform.arch` or `node.ip`, "
        "then `==` or `!=`, then a value. A deployment whose constraints hold for no node "
        "of the cluster fails at once, naming them; one whose nodes are down, paused or "
        "drained waits for one within its error budget. The old tasks keep serving. Only "
        "on an engine with nodes.",
        examples=[["node.labels.zone == a", "node.role != manager"]],
    )
    spread: Literal["node", "none"] = Field(
        default="node",
        description="`node`: each node holds at most ceil(replicas / nodes) of the stage's "
        "tasks, counting the nodes that may take them, and new tasks go to the least loaded "
        "of those: by the engine's own account of every task on the node (this platform's, "
        "another's, anyone's) and of the cpu and memory they reserve. `none`: Swarm picks "
        "each task's node.",
        examples=["none"],
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
    path: ContainerPath = Field(
        default="/run/stackyard/env",
        description="Absolute path inside the container where the rendered file is written "
        "before the task starts; never into the repo or the image. On a Docker engine it is "
        "the image's USER's, mode 0600; on Swarm a secret on the task's tmpfs, mode 0444 "
        "(Docker's default for secrets), so an app that is not root reads it either way.",
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
    target: TargetName = Field(
        default="local",
        description="Target the stage runs on (`stackyard targets`): its engine, the "
        "registry that engine pulls from, and its region. `local` is the platform's own "
        "engine and registry. Releasing to a stage whose target pulls from another registry "
        "copies the image there by digest first. A name the platform has no target of fails "
        "the build (and `stackyard config check --platform`), naming the stage and the line.",
        examples=["eu"],
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
    cpu: StrictFloat = Field(
        default=0.5,
        gt=0,
        description="CPU limit per task, in cores. On a swarm it is also reserved: a node "
        "takes only as many tasks as its cores hold.",
        examples=[2],
    )
    memory: Memory = Field(
        default="256m",
        description="Memory limit per task; a task that goes over it is killed and replaced. "
        "On a swarm it is also reserved on the task's node.",
        examples=["1g"],
    )
    pids_limit: StrictInt = Field(
        default=1024,
        ge=16,
        description="Most processes and threads each task may run at once; a fork bomb "
        "stops there instead of exhausting the machine's.",
        examples=[4096],
    )
    read_only: bool = Field(
        default=False,
        description="Run each task with a read-only root file system. The app can still "
        "write to `/tmp` and `/run` (in memory, counted in `memory`).",
        examples=[True],
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
    host: HostName | None = Field(
        default=None,
        description="Host name the router serves this stage on, on its HTTP and HTTPS "
        "ports. Not with `port`.",
        examples=["app.example.com"],
    )
    domains: list[HostName] = Field(
        default_factory=list,
        description="More host names the stage is served on, beside `host` (or, without "
        "`host`, the first of them is its host). Each gets its own certificate unless "
        "`tls` is `off`. Not with `port`.",
        examples=[["www.example.com", "example.com"]],
    )
    tls: Literal["acme", "internal", "off"] | None = Field(
        default=None,
        description="How the stage's host names are served: `acme` (HTTPS with a "
        "certificate from the platform's ACME CA, Let's Encrypt by default; HTTP answers "
        "308 to HTTPS), `internal` (HTTPS with a certificate from the router's own local "
        "CA, for private names), `off` (plain HTTP). Default: `acme` when the platform "
        "runs with `--acme-email` or `--domain`, else `off`. Not `acme` or `internal` with `port`.",
        examples=["internal"],
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
    placement: PlacementConfig = Field(
        default_factory=PlacementConfig,
        description="Where the tasks may run and how they spread over the nodes of a cluster.",
        examples=[{"constraints": ["node.labels.zone == a"], "spread": "node"}],
    )
    env_file: EnvFileConfig | None = Field(
        default=None,
        description="Optional file rendered from a template and mounted into each task, for "
        "apps that read a .env file instead of their environment.",
        examples=[{"template": "deploy/app.env.j2", "path": "/app/.env"}],
    )

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` (and `no`, `false`) as a boolean.
        if value is False:
            return "off"
        if value is True:
            raise ValueError("a yes/no here is ambiguous: write acme, internal or off")
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> StageConfig:
        if self.port is not None and (self.host is not None or self.domains):
            raise ValueError(
                f"stage '{self.name}' sets both port and host (or domains); keep one: port "
                "serves on 127.0.0.1, host and domains serve host names"
            )
        if self.port is not None and self.tls in ("acme", "internal"):
            raise ValueError(
                f"stage '{self.name}' sets tls: {self.tls} with port: certificates are for "
                "host names, a port route is plain HTTP on 127.0.0.1; serve the stage on "
                "host or domains instead of port, or leave tls out"
            )
        names = [*([self.host] if self.host else []), *self.domains]
        if len(set(names)) != len(names):
            raise ValueError(f"stage '{self.name}' lists a host name twice: {', '.join(names)}")
        if self.read_only and self.env_file is not None:
            raise ValueError(
                f"stage '{self.name}' sets read_only and env_file: the env file is written "
                "into the task before it starts, which a read-only root file system does "
                "not allow; keep one (the variables also reach the task's environment)"
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
        if self.host is not None or self.domains:
            return ", ".join([*([self.host] if self.host else []), *self.domains])
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

    name: StackName | None = Field(
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
