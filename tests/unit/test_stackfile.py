"""stackyard.yml models and loading: every validation rule, override files and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.config.buildspec import load_buildspec
from stackyard.config.loading import (
    DEFAULT_FILE,
    LoadedConfig,
    deep_merge,
    find_override_files,
    load_stack_config,
)
from stackyard.config.models import StackConfig, StageConfig, json_schema, rollout_problem
from stackyard.config.values import memory_bytes
from stackyard.config.yamlfile import in_checkout
from stackyard.errors import ConfigError, NotFoundError


def write(repo: Path, text: str, name: str = DEFAULT_FILE) -> Path:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(repo: Path, text: str | None = None, **overrides: str) -> LoadedConfig:
    if text is not None:
        write(repo, text)
    for stage, body in overrides.items():
        write(repo, body, f"stackyard.{stage}.yml")
    return load_stack_config(repo)


def error_of(repo: Path, text: str | None = None, **overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(repo, text, **overrides)
    assert caught.value.exit_code == 2
    return caught.value.message


# --- defaults -------------------------------------------------------------------------------


def test_no_stackyard_yml_gives_dev_staging_prod(tmp_path: Path) -> None:
    loaded = load_stack_config(tmp_path)
    assert loaded.is_default
    assert loaded.files == []
    assert loaded.warnings == []
    config = loaded.config
    assert config.stage_names == ["dev", "staging", "prod"]
    assert [s.promotion for s in config.stages] == ["auto", "auto", "approval"]
    assert config.build.context == "."
    assert config.build.dockerfile == "Dockerfile"
    assert config.build.buildspec == "build.yml"
    assert config.build.releasespec == "release.yml"
    assert config.build.paths is None


def test_stage_defaults_follow_design(tmp_path: Path) -> None:
    stage = load(tmp_path, "stages: [{name: app}]").config.stage("app")
    assert stage.promotion == "auto"
    assert stage.replicas == 1
    assert stage.cpu == 0.5
    assert stage.memory == "256m"
    assert stage.memory_bytes == 256 * 1024**2
    assert stage.port is None
    assert stage.host is None
    assert stage.route == "auto port"
    assert stage.health.type == "http"
    assert stage.health.path == "/"
    assert stage.health.retries == 3
    assert stage.deploy.minimum_healthy_percent == 100
    assert stage.deploy.maximum_percent == 200
    assert stage.deploy.drain_seconds == 2.0
    assert stage.deploy.stop_timeout == 10.0
    assert stage.variables == {}
    assert stage.env_file is None


def test_empty_file_and_file_without_stages_get_default_stages(tmp_path: Path) -> None:
    loaded = load(tmp_path, "")
    assert not loaded.is_default
    assert loaded.config.stage_names == ["dev", "staging", "prod"]
    assert load(tmp_path, "build: {context: app}").config.stage("prod").promotion == "approval"


def test_other_file_name_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"services/api/stackyard\.yml: no such file"):
        load_stack_config(tmp_path, file="services/api/stackyard.yml")


def test_stackyard_yaml_spelling_is_an_error_with_hint(tmp_path: Path) -> None:
    write(tmp_path, "stages: [{name: dev}]", "stackyard.yaml")
    with pytest.raises(ConfigError, match=r"reads stackyard\.yml; rename"):
        load_stack_config(tmp_path)


def test_config_file_in_subdirectory(tmp_path: Path) -> None:
    write(tmp_path, "stages: [{name: web}]", "services/api/stackyard.yml")
    write(tmp_path, "replicas: 4", "services/api/stackyard.web.yml")
    loaded = load_stack_config(tmp_path, file="services/api/stackyard.yml")
    assert loaded.config.stage("web").replicas == 4


# --- YAML and types -------------------------------------------------------------------------


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages:\n  - name: dev\n    replicas: [1\n")
    assert "malformed YAML" in message
    assert f"{tmp_path / DEFAULT_FILE}:4:" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_wrong_type_names_field_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages:\n  - name: dev\n    replicas: many\n")
    assert f"{DEFAULT_FILE}:3:5: stages[0].replicas:" in message
    assert "valid integer" in message


def test_tls_off_unquoted_is_off_though_yaml_reads_a_boolean(tmp_path: Path) -> None:
    """YAML 1.1 reads `off` as false: `tls: off`, as the docs write it, failed with
    "Input should be 'acme', 'internal' or 'off' (got False)"."""
    loaded = load(tmp_path, "stages:\n  - name: dev\n    host: a.test\n    tls: off\n")
    assert loaded.config.stages[0].tls == "off"
    message = error_of(tmp_path, "stages:\n  - name: dev\n    host: a.test\n    tls: on\n")
    assert f"{DEFAULT_FILE}:4:5: stages[0].tls:" in message
    assert "write acme, internal or off" in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages:\n  - name: dev\n    cpu: 0\n    replicas: -1\n")
    assert "2 problems" in message
    assert "stages[0].cpu" in message
    assert "stages[0].replicas" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("stages: [{name: dev, replicas: true}]", "stages[0].replicas"),
        ("stages: [{name: dev, cpu: yes}]", "stages[0].cpu"),
        ("stages: [{name: dev, replicas: '2'}]", "stages[0].replicas"),
        ("stages: [{name: dev, promotion: manual}]", "stages[0].promotion"),
        ("stages: [{name: dev, port: 0}]", "stages[0].port"),
        ("stages: [{name: dev, port: 70000}]", "stages[0].port"),
        ("stages: [{name: dev, container_port: 0}]", "stages[0].container_port"),
        ("stages: [{name: dev, health: {retries: 0}}]", "stages[0].health.retries"),
        ("stages: [{name: dev, health: {interval: 0}}]", "stages[0].health.interval"),
        ("stages: [{name: dev, health: {timeout: soon}}]", "stages[0].health.timeout"),
        ("stages: [{name: dev, health: {type: tcp}}]", "stages[0].health.type"),
        ("stages: [{name: dev, deploy: {minimum_healthy_percent: 101}}]", "minimum_healthy"),
        ("stages: [{name: dev, deploy: {maximum_percent: 99}}]", "deploy.maximum_percent"),
        ("stages: [{name: dev, deploy: {drain_seconds: -1}}]", "deploy.drain_seconds"),
        ("stages: [{name: dev, env_file: {path: /x}}]", "required key 'template'"),
        ("stages: [{name: dev, env_file: {template: ../secret}}]", "env_file.template"),
        ("stages: [{name: dev, env_file: {template: a, path: rel}}]", "env_file.path"),
        ("stages: [{name: dev, host: 'Not A Host'}]", "stages[0].host"),
        ("stages: [{name: dev, placement: {constraints: [zone=a]}}]", "has no operator"),
        (
            "stages: [{name: dev, placement: {constraints: ['node.zone == a']}}]",
            "stages[0].placement.constraints[0]",
        ),
        ("stages: [{name: dev, placement: {spread: zone}}]", "stages[0].placement.spread"),
        ("stages: [{promotion: auto}]", "required key 'name'"),
        ("stages: {dev: {}}", "stages"),
        ("build: {context: /abs}", "build.context"),
        ("build: {dockerfile: ../Dockerfile}", "build.dockerfile"),
        ("build: {paths: [/etc/**]}", "build.paths[0]"),
        ("name: Bad_Name", "name"),
    ],
)
def test_invalid_values_are_errors_naming_the_key(tmp_path: Path, text: str, where: str) -> None:
    assert where in error_of(tmp_path, text)


def test_a_placement_constraint_with_bad_syntax_names_the_field_and_the_syntax(
    tmp_path: Path,
) -> None:
    said = error_of(tmp_path, "stages:\n  - name: prod\n    placement:\n"
                    "      constraints: ['node.labels.zone = a']\n")  # fmt: skip
    assert "stages[0].placement.constraints[0]" in said
    assert "write <key> == <value> or <key> != <value>" in said


# --- unknown keys ---------------------------------------------------------------------------


def test_unknown_keys_are_warnings_naming_the_closest_key(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "biuld: {}\nstages:\n  - name: dev\n    replics: 2\n    health:\n      pth: /x\n",
    )
    texts = [str(w) for w in loaded.warnings]
    assert len(texts) == 3
    assert "stackyard.yml:1:1: biuld: unknown key 'biuld'; did you mean 'build'?" in texts[0]
    assert "stackyard.yml:4:5: stages[0].replics: " in texts[1]
    assert "did you mean 'replicas'?" in texts[1]
    assert "stackyard.yml:6:7: stages[0].health.pth: " in texts[2]
    assert "did you mean 'path'?" in texts[2]
    assert loaded.config.stage("dev").replicas == 1


def test_warnings_are_listed_with_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages:\n  - nme: dev\n")
    assert "required key 'name' is missing" in message
    assert "warnings:" in message
    assert "did you mean 'name'?" in message


# --- variables ------------------------------------------------------------------------------


def test_variable_values_become_strings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "build:\n  variables: {A: 1, B: 1.5, C: true, D: off, E: text, F: ''}\n"
        "stages: [{name: dev, variables: {PORT_X: 80}}]\n",
    ).config
    assert config.build.variables == {
        "A": "1",
        "B": "1.5",
        "C": "true",
        "D": "false",
        "E": "text",
        "F": "",
    }
    assert config.stage("dev").variables == {"PORT_X": "80"}


@pytest.mark.parametrize("name", ["1ABC", "MY-VAR", "A B", "ä"])
def test_invalid_variable_name_points_at_the_key(tmp_path: Path, name: str) -> None:
    message = error_of(tmp_path, f"build:\n  variables:\n    OK: 1\n    '{name}': x\n")
    assert f"stackyard.yml:4:5: build.variables.{name}: '{name}' is not a valid variable name" in (
        message
    )


@pytest.mark.parametrize("name", ["STAGE_NAME", "IMAGE_URL", "CODEBUILD_BUILD_ID"])
def test_platform_variables_cannot_be_overridden(tmp_path: Path, name: str) -> None:
    message = error_of(tmp_path, f"stages: [{{name: dev, variables: {{{name}: x}}}}]")
    assert f"'{name}' is set by Stackyard" in message


@pytest.mark.parametrize("value", ["~", "[1]", "{a: 1}"])
def test_variable_value_must_be_scalar(tmp_path: Path, value: str) -> None:
    assert "build.variables.A" in error_of(tmp_path, f"build: {{variables: {{A: {value}}}}}")


# --- stages ---------------------------------------------------------------------------------


def test_at_least_one_stage(tmp_path: Path) -> None:
    assert "at least one stage" in error_of(tmp_path, "stages: []")


def test_duplicate_stage_names_the_duplicate(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages:\n  - name: dev\n  - name: prod\n  - name: dev\n")
    assert "stackyard.yml:1:1: stages: stage name 'dev' is used twice" in message
    assert "stages[0] and stages[2]" in message


@pytest.mark.parametrize("name", ["Prod", "-dev", "dev_1", "a" * 64, "", "latest"])
def test_invalid_stage_names(tmp_path: Path, name: str) -> None:
    assert "stages[0].name" in error_of(tmp_path, f"stages: [{{name: '{name}'}}]")


def test_valid_stage_names(tmp_path: Path) -> None:
    config = load(tmp_path, f"stages: [{{name: pr-1}}, {{name: '{'a' * 63}'}}, {{name: 2x}}]")
    assert config.config.stage_names == ["pr-1", "a" * 63, "2x"]


def test_port_and_host_both_set_is_an_error(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, "stages:\n  - name: dev\n    port: 8081\n    host: a.example.com\n"
    )
    assert "stackyard.yml:2:5: stages[0]: stage 'dev' sets both port and host" in message


def test_read_only_with_an_env_file_is_an_error(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "stages:\n  - name: dev\n    read_only: true\n    env_file: {template: t.j2}\n",
    )
    assert "stage 'dev' sets read_only and env_file" in message


def test_build_image_must_be_an_image_reference(tmp_path: Path) -> None:
    assert "build.image" in error_of(tmp_path, "build: {image: 'Not An Image'}")
    assert load(tmp_path, "build: {image: 'node:22-slim'}").config.build.image == "node:22-slim"


def test_route_shows_port_or_host(tmp_path: Path) -> None:
    config = load(tmp_path, "stages: [{name: a, port: 8081}, {name: b, host: a.example.com}]")
    assert config.config.stage("a").route == "127.0.0.1:8081"
    assert config.config.stage("b").route == "a.example.com"


def test_stage_lookup_names_the_valid_stages() -> None:
    config = StackConfig()
    with pytest.raises(NotFoundError) as caught:
        config.stage("qa")
    assert "stage 'qa' does not exist" in caught.value.message
    assert caught.value.hint == "valid stages: dev, staging, prod"


def test_previous_stage_name() -> None:
    config = StackConfig()
    assert config.previous_stage_name("dev") == "latest"
    assert config.previous_stage_name("prod") == "staging"


# --- memory and durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256m", 256 * 1024**2),
        ("1g", 1024**3),
        ("1G", 1024**3),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("512MB", 512 * 1024**2),
        ("7340032", 7340032),
        ("8192k", 8 * 1024**2),
        (" 64 m ", 64 * 1024**2),
    ],
)
def test_memory_sizes(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected


@pytest.mark.parametrize("value", ["lots", "1z", "1gb2", "-1g", "5m", "512", "1.g"])
def test_bad_memory_is_a_clear_error(tmp_path: Path, value: str) -> None:
    message = error_of(tmp_path, f"stages:\n  - name: dev\n    memory: '{value}'\n")
    assert "stackyard.yml:3:5: stages[0].memory:" in message
    assert ("not a memory size" in message) or ("below Docker's minimum of 6m" in message)


def test_memory_as_number_is_bytes(tmp_path: Path) -> None:
    assert "below Docker's minimum" in error_of(tmp_path, "stages: [{name: dev, memory: 512}]")
    stage = load(tmp_path, "stages: [{name: dev, memory: 67108864}]").config.stage("dev")
    assert stage.memory_bytes == 64 * 1024**2


def test_durations_accept_numbers_and_units(tmp_path: Path) -> None:
    stage = load(
        tmp_path,
        "stages: [{name: dev, health: {interval: 500ms, timeout: 1, start_period: 1m}, "
        "deploy: {drain_seconds: 2.5s}}]",
    ).config.stage("dev")
    assert stage.health.interval == 0.5
    assert stage.health.timeout == 1.0
    assert stage.health.start_period == 60.0
    assert stage.deploy.drain_seconds == 2.5


# --- health ---------------------------------------------------------------------------------


def test_health_path_must_start_with_slash(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages: [{name: dev, health: {path: healthz}}]")
    assert "stages[0].health.path: 'healthz' must start with '/'" in message


def test_health_path_null_points_to_docker_type(tmp_path: Path) -> None:
    message = error_of(tmp_path, "stages: [{name: dev, health: {path: null}}]")
    assert "set health.type: docker" in message


def test_docker_health_uses_image_healthcheck(tmp_path: Path) -> None:
    stage = load(tmp_path, "stages: [{name: dev, health: {type: docker}}]").config.stage("dev")
    assert stage.health.uses_image_healthcheck
    message = error_of(tmp_path, "stages: [{name: dev, health: {type: docker, path: /x}}]")
    assert "health.path applies only to type: http" in message


# --- rollout bounds -------------------------------------------------------------------------


def test_rollout_that_cannot_progress_says_what_to_change(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, "stages: [{name: dev, replicas: 1, deploy: {maximum_percent: 150}}]"
    )
    assert "can neither start a new task nor stop an old one" in message
    assert "raise deploy.maximum_percent to 200 or more" in message
    assert "lower deploy.minimum_healthy_percent to 0 or less" in message


@pytest.mark.parametrize(
    ("replicas", "minimum", "maximum", "ok"),
    [
        (1, 100, 200, True),
        (1, 100, 199, False),
        (4, 100, 125, True),
        (4, 100, 120, False),
        (3, 50, 100, True),
        (1, 0, 100, True),
        (0, 100, 100, True),
        (3, 100, 100, False),
    ],
)
def test_rollout_problem(replicas: int, minimum: int, maximum: int, ok: bool) -> None:
    assert (rollout_problem(replicas, minimum, maximum) is None) is ok


# --- override files -------------------------------------------------------------------------


BASE = """\
stages:
  - name: dev
    variables: {A: base, B: base}
  - name: prod
    cpu: 1
    health:
      path: /healthz
      retries: 5
"""


def test_override_changes_only_that_stage(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        BASE,
        prod="cpu: 2\nmemory: 1g\nhealth:\n  retries: 9\nvariables: {B: prod}\n",
    )
    config = loaded.config
    prod = config.stage("prod")
    assert (prod.cpu, prod.memory) == (2.0, "1g")
    assert prod.health.path == "/healthz"  # merged, not replaced
    assert prod.health.retries == 9
    assert prod.variables == {"B": "prod"}
    dev = config.stage("dev")
    assert dev == StageConfig(name="dev", variables={"A": "base", "B": "base"})
    assert loaded.files == [tmp_path / "stackyard.yml", tmp_path / "stackyard.prod.yml"]


def test_override_null_returns_key_to_default(tmp_path: Path) -> None:
    config = load(tmp_path, BASE, prod="cpu: null\nhealth: {path: null}\n").config
    assert config.stage("prod").cpu == 0.5
    assert config.stage("prod").health.path == "/"
    assert config.stage("prod").health.retries == 5


def test_override_for_unknown_stage_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, BASE, qa="cpu: 2\n")
    assert "stackyard.qa.yml: override file for stage 'qa'" in caught.value.message
    assert caught.value.hint is not None
    assert "valid stages: dev, prod" in caught.value.hint


def test_override_errors_point_into_the_override_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE, prod="cpu: 2\nreplicas: lots\n")
    assert "stackyard.prod.yml:2:1: replicas:" in message


def test_cross_field_error_after_merge_names_the_override(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE, prod="host: app.example.com\nport: 8080\n")
    assert "sets both port and host" in message
    assert "(after merging" in message
    assert "stackyard.prod.yml" in message


def test_override_unknown_key_warning(tmp_path: Path) -> None:
    loaded = load(tmp_path, BASE, prod="cpus: 2\n")
    assert len(loaded.warnings) == 1
    warning = str(loaded.warnings[0])
    assert "stackyard.prod.yml:1:1: cpus: unknown key 'cpus'; did you mean 'cpu'?" in warning


def test_override_name_must_match_file(tmp_path: Path) -> None:
    assert load(tmp_path, BASE, prod="name: prod\ncpu: 3\n").config.stage("prod").cpu == 3
    assert "differs from the stage 'prod'" in error_of(tmp_path, BASE, prod="name: dev\n")


def test_override_with_stages_form_is_a_clear_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE, prod="stages: [{name: prod, cpu: 2}]\n")
    assert "holds the keys of stage 'prod' only" in message


def test_override_must_be_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in error_of(tmp_path, BASE, prod="- cpu\n")


def test_empty_override_changes_nothing(tmp_path: Path) -> None:
    assert load(tmp_path, BASE, prod="").config.stage("prod").cpu == 1.0


def test_malformed_override_names_its_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, BASE, prod="cpu: 2\nmemory: [1g\n")
    assert "stackyard.prod.yml:3:" in message
    assert "malformed YAML" in message


def test_overrides_apply_to_default_stages(tmp_path: Path) -> None:
    loaded = load(tmp_path, None, prod="replicas: 3\n")
    assert loaded.is_default
    assert loaded.config.stage("prod").replicas == 3
    assert loaded.config.stage("prod").promotion == "approval"
    assert loaded.config.stage("staging").replicas == 1


def test_find_override_files_ignores_the_base_file(tmp_path: Path) -> None:
    base = write(tmp_path, BASE)
    write(tmp_path, "", "stackyard.prod.yml")
    write(tmp_path, "", "stackyard.dev.yml")
    write(tmp_path, "", "other.prod.yml")
    assert find_override_files(base) == [
        ("dev", tmp_path / "stackyard.dev.yml"),
        ("prod", tmp_path / "stackyard.prod.yml"),
    ]


def test_deep_merge() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}, "d": None, "e": 2}) == {
        "a": {"b": 1, "c": [3]},
        "e": 2,
    }
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# --- schema and paths -----------------------------------------------------------------------


def test_json_schema_describes_stages() -> None:
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "stages" in schema["properties"]
    stage = schema["$defs"]["StageConfig"]
    assert stage["properties"]["promotion"]["enum"] == ["auto", "approval"]
    assert stage["required"] == ["name"]


def test_build_paths_are_relative_to_context(tmp_path: Path) -> None:
    build = load(tmp_path, "build: {context: services/api, buildspec: ci/build.yml}").config.build
    assert str(build.dockerfile_path) == "services/api/Dockerfile"
    assert str(build.buildspec_path) == "services/api/ci/build.yml"
    assert str(build.releasespec_path) == "services/api/release.yml"


def test_a_target_the_platform_lacks_is_named_with_its_stage_and_line(tmp_path: Path) -> None:
    (tmp_path / "stackyard.yml").write_text(
        "stages:\n  - name: dev\n  - name: prod\n    target: eu\n", encoding="utf-8"
    )
    assert load_stack_config(tmp_path).config.stages[1].target == "eu"  # names not checked
    assert load_stack_config(tmp_path, targets={"local", "eu"}).config.stages[0].target == "local"
    with pytest.raises(ConfigError) as caught:
        load_stack_config(tmp_path, targets={"local"})
    assert (
        f"{tmp_path / 'stackyard.yml'}:4:5: stages[1].target: stage 'prod' runs on target "
        "'eu', which the platform does not have (targets: local)"
    ) in caught.value.message
    # an override file that names the target is the one the problem points into
    (tmp_path / "stackyard.dev.yml").write_text("cpu: 1\ntarget: us\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_stack_config(tmp_path, targets={"local", "eu"})
    assert f"{tmp_path / 'stackyard.dev.yml'}:2:1: target: stage 'dev'" in caught.value.message
    # A build's checkout is a temporary directory: its log names the files in the repo.
    with pytest.raises(ConfigError) as caught:
        load_stack_config(tmp_path, targets={"local", "eu"}, in_repo=True)
    assert caught.value.message.startswith("stackyard.yml is invalid (1 problem):\n")
    assert "\n  stackyard.dev.yml:2:1: target: stage 'dev'" in caught.value.message
    assert str(tmp_path) not in caught.value.message
    write(tmp_path, "cpu: 1\nbuild: {}\n", "stackyard.dev.yml")
    with pytest.raises(ConfigError, match=r"^stackyard.dev.yml: build: an override file"):
        load_stack_config(tmp_path, in_repo=True)
    write(tmp_path, "stages: [", "services/api/stackyard.yml")
    with pytest.raises(ConfigError, match=r"^services/api/stackyard.yml:1:10: malformed YAML"):
        load_stack_config(tmp_path, file="services/api/stackyard.yml", in_repo=True)


def test_a_build_spec_from_a_checkout_is_named_by_its_path_in_the_repo(tmp_path: Path) -> None:
    spec = write(tmp_path, "version: 0.2\nphases: [", "ci/build.yml")
    with pytest.raises(ConfigError) as caught:
        load_buildspec(spec, name=in_checkout(spec, tmp_path))
    assert caught.value.message.startswith("ci/build.yml:2:10: malformed YAML")
    assert in_checkout(Path("/elsewhere/build.yml"), tmp_path) == "/elsewhere/build.yml"
