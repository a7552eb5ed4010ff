"""Loading build specs: required keys, types, warnings and errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.config.buildspec import load_buildspec, parse_on_failure
from stackyard.errors import ConfigError


def load_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_buildspec(text, name="build.yml")
    assert caught.value.exit_code == 2
    return str(caught.value)


def warnings_of(text: str) -> list[str]:
    _, warnings = load_buildspec(text, name="build.yml")
    return [str(w) for w in warnings]


@pytest.mark.parametrize("version", ["0.2", '"0.2"'])
def test_version_as_float_or_string(version: str) -> None:
    spec, warnings = load_buildspec(f"version: {version}\nphases: {{}}\n")
    assert spec.version == "0.2"
    assert warnings == []


def test_other_version_is_an_error_with_line() -> None:
    message = load_error("phases: {}\nversion: 0.1\n")
    assert "build.yml:2:1: version: unsupported build spec version '0.1'" in message


def test_missing_version() -> None:
    assert "required key 'version' is missing" in load_error("phases: {}\n")


def test_missing_phases() -> None:
    assert "required key 'phases' is missing" in load_error("version: 0.2\n")


def test_malformed_yaml_names_the_line() -> None:
    message = load_error("version: 0.2\nphases:\n  build:\n    commands: [a\n")
    assert "build.yml:5:1: malformed YAML" in message


def test_wrong_type_names_the_line() -> None:
    message = load_error("version: 0.2\nphases:\n  build:\n    commands: 3\n")
    assert "build.yml:4:5: phases.build.commands: Input should be a valid list" in message


def test_command_read_as_mapping_says_to_quote_it() -> None:
    message = load_error("version: 0.2\nphases:\n  build:\n    commands:\n      - echo a: b\n")
    assert "build.yml:5:9" in message
    assert "put the whole command in quotes" in message


def test_unknown_key_warns_with_closest_match() -> None:
    text = "version: 0.2\nenv:\n  variabels: {A: 1}\nphases: {}\n"
    [warning] = warnings_of(text)
    assert warning.startswith("build.yml:3:3: env.variabels: unknown key 'variabels'")
    assert "did you mean 'variables'?" in warning


def test_unknown_phase_is_an_error_with_closest_phase() -> None:
    message = load_error("version: 0.2\nphases:\n  biuld:\n    commands: [make]\n")
    assert "build.yml:3:3: phases.biuld: unknown phase 'biuld'; did you mean 'build'?" in message


def test_every_problem_is_listed_at_once() -> None:
    message = load_error("version: 9\nphases:\n  biuld: {}\n")
    assert "2 problems" in message
    assert "unknown phase" in message
    assert "unsupported build spec version" in message


def test_runtime_versions_outside_install_is_an_error() -> None:
    text = "version: 0.2\nphases:\n  build:\n    runtime-versions: {python: 3.11}\n"
    message = load_error(text)
    assert "build.yml:4:5: phases.build.runtime-versions: runtime-versions is only allowed" in (
        message
    )


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("cache", "cache:\n  paths: [x]\n"),
        ("reports", "reports:\n  r: {files: [x]}\n"),
        ("batch", "batch:\n  fast-fail: true\n"),
        ("proxy", "proxy:\n  upload-artifacts: true\n"),
        ("git-credential-helper", "env:\n  git-credential-helper: yes\n"),
        ("runtime-versions", "phases:\n  install:\n    runtime-versions: {python: 3.11}\n"),
        ("secondary-artifacts", "artifacts:\n  files: [a]\n  secondary-artifacts: {}\n"),
    ],
)
def test_unsupported_key_is_named_and_ignored(key: str, text: str) -> None:
    base = "version: 0.2\n" + ("" if text.startswith("phases") else "phases: {}\n")
    warnings = warnings_of(base + text)
    assert len(warnings) == 1
    assert f"'{key}' is not supported and is ignored" in warnings[0]
    assert warnings[0].startswith("build.yml:")


@pytest.mark.parametrize(
    "value", ["ABORT", "CONTINUE", "RETRY", "RETRY-2", "RETRY-x.*y", "RETRY-5-a-b"]
)
def test_valid_on_failure_values(value: str) -> None:
    load_buildspec(f"version: 0.2\nphases:\n  build:\n    on-failure: {value}\n")


def test_on_failure_retry_forms() -> None:
    assert parse_on_failure("RETRY").retries == 3
    assert parse_on_failure("RETRY-5").retries == 5
    retry = parse_on_failure("RETRY-2-timed out.*")
    assert (retry.retries, retry.pattern) == (2, "timed out.*")
    assert parse_on_failure("RETRY-flaky").pattern == "flaky"


@pytest.mark.parametrize("value", ["abort", "STOP", "RETRY-0", "RETRY-(["])
def test_bad_on_failure_names_allowed_values_and_line(value: str) -> None:
    message = load_error(f"version: 0.2\nphases:\n  build:\n    on-failure: '{value}'\n")
    assert "build.yml:4:5: phases.build.on-failure" in message


def test_bad_on_failure_lists_the_forms() -> None:
    message = load_error("version: 0.2\nphases:\n  build:\n    on-failure: STOP\n")
    assert "allowed: ABORT, CONTINUE, RETRY" in message


@pytest.mark.parametrize("section", ["variables:\n    1A: x", "exported-variables: [a-b]"])
def test_invalid_variable_name_with_line(section: str) -> None:
    message = load_error(f"version: 0.2\nenv:\n  {section}\nphases: {{}}\n")
    assert "build.yml:" in message
    assert "is not a valid variable name" in message


def test_variable_values_are_literal_strings() -> None:
    text = "version: 0.2\nenv:\n  variables:\n    N: 3\n    B: true\n    P: $PATH:/x\nphases: {}\n"
    spec, _ = load_buildspec(text)
    assert spec.env.variables == {"N": "3", "B": "true", "P": "$PATH:/x"}


def test_secret_cannot_be_exported() -> None:
    text = (
        "version: 0.2\nenv:\n  secrets-manager: {TOKEN: api}\n"
        "  exported-variables: [TOKEN]\nphases: {}\n"
    )
    message = load_error(text)
    assert "'TOKEN' takes its value from a secret, and secrets cannot be exported" in message


def test_unsupported_shell_is_an_error() -> None:
    assert "allowed: sh, bash" in load_error("version: 0.2\nenv: {shell: zsh}\nphases: {}\n")


def test_load_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "build.yml"
    path.write_text("version: 0.2\nphases:\n  install: {}\n  nope: {}\n")
    with pytest.raises(ConfigError, match=r"build\.yml:4:3: phases\.nope"):
        load_buildspec(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_buildspec(tmp_path / "absent.yml")


def test_phases_are_declared_in_run_order() -> None:
    text = "version: 0.2\nphases:\n  post_build: {}\n  build: {}\n  install: {}\n"
    spec, _ = load_buildspec(text)
    assert [name for name, _ in spec.phases.declared()] == ["install", "build", "post_build"]
