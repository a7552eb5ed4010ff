"""The buildspec runner against real sh and bash: phases, failures, state, variables, log.

Every test runs twice: with commands on this host, and in a build container (the
``shell_kind`` fixture, tests/buildspec_shells.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stackyard.buildspec.buildlog import LineKind, LogLine
from stackyard.buildspec.container import TOOLS_MOUNT, ContainerSettings, ContainerShell
from stackyard.buildspec.process import Command, CommandOutcome
from stackyard.buildspec.runner import BuildResult, RunSettings, Status, run_buildspec
from stackyard.buildspec.shell import TOOLS_DIR, LocalShell, OutputCallback
from stackyard.config.buildspec import load_buildspec
from stackyard.errors import ConfigError, UsageError

from ..buildspec_shells import KINDS, open_shell, workdir_seen


@dataclass
class Ran:
    result: BuildResult
    lines: list[LogLine] = field(default_factory=list)

    def output(self, phase: str | None = None) -> list[str]:
        return [
            line.text
            for line in self.lines
            if line.kind is LineKind.OUTPUT and phase in (None, line.phase)
        ]

    def statuses(self) -> dict[str, str]:
        return {p.name: str(p.status) for p in self.result.phases}


RunSpec = Callable[..., Ran]


@pytest.fixture(params=KINDS)
def shell_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def run_spec(shell_kind: str) -> RunSpec:
    """Run a spec's text with ``tmp_path`` as the workdir (unless ``workdir=`` says)."""

    def run(tmp_path: Path, text: str, **settings: Any) -> Ran:
        spec, _ = load_buildspec(text)
        workdir = settings.pop("workdir", tmp_path)
        lines: list[LogLine] = []
        log_path = tmp_path / "logs" / "build.log"
        options = RunSettings(workdir=workdir, log_path=log_path, **settings)
        shell = open_shell(shell_kind, tmp_path, options.artifacts_dir)
        return Ran(run_buildspec(spec, options, sink=lines.append, shell=shell), lines)

    return run


def spec(*phases: str, env: str = "") -> str:
    return "version: 0.2\n" + env + "phases:\n" + "".join(phases)


def phase(name: str, *commands: str, extra: str = "") -> str:
    body = "".join(f"      - {json.dumps(c)}\n" for c in commands)
    listing = f"    commands:\n{body}" if commands else ""
    return f"  {name}:\n{listing}{extra}"


def yaml_list(key: str, *commands: str) -> str:
    return f"    {key}:\n" + "".join(f"      - {json.dumps(c)}\n" for c in commands)


def test_phases_run_in_order(run_spec: RunSpec, tmp_path: Path) -> None:
    text = spec(
        phase("post_build", "echo post"),
        phase("build", "echo build"),
        phase("install", "echo install"),
        phase("pre_build", "echo pre"),
    )
    ran = run_spec(tmp_path, text)
    assert ran.output() == ["install", "pre", "build", "post"]
    assert ran.result.status is Status.SUCCEEDED


def test_failure_skips_rest_of_phase_but_runs_finally(run_spec: RunSpec, tmp_path: Path) -> None:
    extra = yaml_list("finally", "echo finally", "echo finally2")
    ran = run_spec(tmp_path, spec(phase("build", "echo a", "exit 3", "echo b", extra=extra)))
    assert ran.output() == ["a", "finally", "finally2"]
    assert ran.result.phases[0].status is Status.FAILED
    assert ran.result.phases[0].exit_code == 3
    assert ran.result.status is Status.FAILED


def test_failing_finally_fails_the_phase(run_spec: RunSpec, tmp_path: Path) -> None:
    ran = run_spec(tmp_path, spec(phase("build", "true", extra=yaml_list("finally", "false"))))
    assert ran.statuses() == {"build": "FAILED"}


@pytest.mark.parametrize("failing", ["install", "pre_build"])
def test_failed_install_or_pre_build_skips_later_phases(
    run_spec: RunSpec, tmp_path: Path, failing: str
) -> None:
    text = spec(phase(failing, "false"), phase("build", "echo b"), phase("post_build", "echo p"))
    ran = run_spec(tmp_path, text)
    assert ran.statuses() == {failing: "FAILED", "build": "SKIPPED", "post_build": "SKIPPED"}
    assert ran.output() == []


def test_continue_after_failed_pre_build(run_spec: RunSpec, tmp_path: Path) -> None:
    failing = phase("pre_build", "false", extra="    on-failure: CONTINUE\n")
    ran = run_spec(tmp_path, spec(failing, phase("build", "echo b")))
    assert ran.statuses() == {"pre_build": "FAILED", "build": "SUCCEEDED"}
    assert ran.result.status is Status.FAILED


def test_post_build_runs_after_failed_build(run_spec: RunSpec, tmp_path: Path) -> None:
    text = spec(phase("build", "false"), phase("post_build", "echo $CODEBUILD_BUILD_SUCCEEDING"))
    ran = run_spec(tmp_path, text)
    assert ran.statuses() == {"build": "FAILED", "post_build": "SUCCEEDED"}
    assert ran.output("post_build") == ["0"]


def test_build_abort_skips_post_build(run_spec: RunSpec, tmp_path: Path) -> None:
    text = spec(phase("build", "false", extra="    on-failure: ABORT\n"), phase("post_build", "x"))
    assert run_spec(tmp_path, text).statuses() == {"build": "FAILED", "post_build": "SKIPPED"}


def test_build_succeeding_flag_turns_to_zero(run_spec: RunSpec, tmp_path: Path) -> None:
    finally_ = yaml_list("finally", "echo $CODEBUILD_BUILD_SUCCEEDING")
    text = spec(phase("build", "echo $CODEBUILD_BUILD_SUCCEEDING", "false", extra=finally_))
    assert run_spec(tmp_path, text).output() == ["1", "0"]


def test_retry_reruns_the_phase_until_it_succeeds(run_spec: RunSpec, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = "echo x >> count; [ $(wc -l < count) -ge 3 ]"
    ran = run_spec(tmp_path, spec(phase("build", command, extra="    on-failure: RETRY\n")))
    assert ran.statuses() == {"build": "SUCCEEDED"}
    assert counter.read_text().count("x") == 3
    assert ran.result.status is Status.SUCCEEDED


def test_retry_count_is_respected(run_spec: RunSpec, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    extra = "    on-failure: RETRY-2\n"
    ran = run_spec(tmp_path, spec(phase("build", "echo x >> count; false", extra=extra)))
    assert ran.statuses() == {"build": "FAILED"}
    assert counter.read_text().count("x") == 3  # the first run and 2 retries


def test_retry_regex_must_match_the_output(run_spec: RunSpec, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = "echo x >> count; echo permanent failure; false"
    extra = "    on-failure: RETRY-3-timed out\n"
    ran = run_spec(tmp_path, spec(phase("build", command, extra=extra)))
    assert counter.read_text().count("x") == 1
    assert ran.statuses() == {"build": "FAILED"}


def test_state_carries_between_commands_and_phases(
    run_spec: RunSpec, shell_kind: str, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    text = spec(
        phase("install", "cd sub; PLAIN='a b'; export EXP=1; f() { echo f; }"),
        phase("build", 'echo "$(pwd) $PLAIN $EXP"', "f || echo no-function"),
    )
    ran = run_spec(tmp_path, text)
    assert ran.output("build")[0] == f"{workdir_seen(shell_kind, tmp_path)}/sub a b 1"
    assert ran.output("build")[-1] == "no-function"


def test_plain_variables_stay_unexported(run_spec: RunSpec, tmp_path: Path) -> None:
    text = spec(phase("build", "PLAIN=1; export EXP=2", "sh -c 'echo \"[$PLAIN][$EXP]\"'"))
    assert run_spec(tmp_path, text).output() == ["[][2]"]


def test_bash_arrays_do_not_carry(run_spec: RunSpec, tmp_path: Path) -> None:
    text = spec(phase("build", "A=(1 2); S=x", 'echo "${A[1]}-$S"'), env="env:\n  shell: bash\n")
    assert run_spec(tmp_path, text).output() == ["-x"]


def test_default_shell_is_bash_and_sh_switches(run_spec: RunSpec, tmp_path: Path) -> None:
    command = 'echo "${BASH_VERSION:+bash}"'
    assert run_spec(tmp_path, spec(phase("build", command))).output() == ["bash"]
    for name in ("sh", "/bin/sh"):
        sh = spec(phase("build", command), env=f"env:\n  shell: {name}\n")
        assert run_spec(tmp_path, sh).output() == [""]


def test_default_shell_runs_tinystacks_bash_syntax(run_spec: RunSpec, tmp_path: Path) -> None:
    """TinyStacks' release.yml was written for CodeBuild's Amazon Linux sh (bash): ``==``
    in ``[`` and a here-string, in a branch not taken, must parse and run."""
    block = (
        'if [ "$S" == "placeholder" ]; then echo not ready; else X=$(cat <<< "$S"); echo "$X"; fi'
    )
    text = spec(phase("build", "S=placeholder", block, "cat <<< here"))
    ran = run_spec(tmp_path, text)
    assert ran.output() == ["not ready", "here"]
    assert ran.result.status is Status.SUCCEEDED


def test_aws_answers_the_ecr_password_masked(run_spec: RunSpec, tmp_path: Path) -> None:
    text = spec(
        phase(
            "build",
            "aws ecr get-login-password --region $AWS_REGION",
            "aws --region eu-west-1 ecr get-login-password | wc -c",
        )
    )
    password = "s3cret-registry-pw"
    ran = run_spec(
        tmp_path,
        text,
        platform_variables={"REGISTRY_PASSWORD": password},
        secrets={"REGISTRY_PASSWORD": password},
    )
    assert ran.result.status is Status.SUCCEEDED
    assert ran.output() == ["***", str(len(password) + 1)]
    assert password not in (tmp_path / "logs" / "build.log").read_text()


def test_aws_answers_the_stage_target_registry_s_password_for_the_stage_region(
    run_spec: RunSpec, tmp_path: Path
) -> None:
    """TinyStacks' regional login: ``--region $STAGE_REGION`` gets the password of the
    registry the stage's target uses; another region (or none) gets the stack's."""
    text = spec(
        phase(
            "build",
            'R="$REGIONAL_REGISTRY_PASSWORD"; O="$REGISTRY_PASSWORD"',
            'p=$(aws ecr get-login-password --region $STAGE_REGION); test "$p" = "$R" && echo st',
            'p=$(aws --region eu-west ecr get-login-password); test "$p" = "$R" && echo global',
            'p=$(aws ecr get-login-password --region=us-east); test "$p" = "$O" && echo other',
            'p=$(aws ecr get-login-password --region $AWS_REGION); test "$p" = "$O" && echo none',
        )
    )
    own, regional = "s3cret-stack-pw", "s3cret-regional-pw"
    passwords = {"REGISTRY_PASSWORD": own, "REGIONAL_REGISTRY_PASSWORD": regional}
    ran = run_spec(
        tmp_path,
        text,
        platform_variables={"STAGE_REGION": "eu-west", **passwords},
        secrets=passwords,
    )
    assert ran.result.status is Status.SUCCEEDED, ran.output()
    assert ran.output() == ["st", "global", "other", "none"]


def test_aws_refuses_anything_else_in_one_line(run_spec: RunSpec, tmp_path: Path) -> None:
    ran = run_spec(tmp_path, spec(phase("build", "aws s3 cp report.html s3://bucket/ 2>&1")))
    assert ran.output() == ["aws: not supported by Stackyard: aws s3 cp report.html s3://bucket/"]
    assert ran.statuses() == {"build": "FAILED"}
    assert ran.result.phases[0].exit_code == 2


def test_aws_ecr_password_outside_a_platform_run_is_refused(
    run_spec: RunSpec, tmp_path: Path
) -> None:
    ran = run_spec(tmp_path, spec(phase("build", "aws ecr get-login-password 2>&1")))
    assert ran.statuses() == {"build": "FAILED"}
    assert ran.output()[0].startswith(
        "aws: not supported by Stackyard: aws ecr get-login-password outside a Stackyard build"
    )


def test_multiline_block_fails_only_on_last_command(run_spec: RunSpec, tmp_path: Path) -> None:
    block = "  build:\n    commands:\n      - |\n        false\n        echo after\n"
    ran = run_spec(tmp_path, spec(block))
    assert ran.output() == ["after"]
    assert ran.statuses() == {"build": "SUCCEEDED"}


def test_multiline_block_with_set_e_fails_and_keeps_state(
    run_spec: RunSpec, tmp_path: Path
) -> None:
    block = "  build:\n    commands:\n      - |\n        set -e\n        KEPT=yes\n        false\n"
    block += "        echo after\n    finally:\n      - echo $KEPT\n"
    ran = run_spec(tmp_path, spec(block))
    assert ran.output() == ["yes"]
    assert ran.statuses() == {"build": "FAILED"}


def test_clean_environment_but_for_the_aws_stand_in_first_on_path(
    run_spec: RunSpec, shell_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVER_ONLY", "leak")
    ran = run_spec(tmp_path, spec(phase("build", 'echo "[$SERVER_ONLY]" $PATH')))
    tools = str(TOOLS_DIR) if shell_kind == "host" else TOOLS_MOUNT
    minimal = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert ran.output() == [f"[] {tools}:{minimal}"]


def test_variable_values_are_not_expanded(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  variables:\n    LIT: $HOME/x\n"
    assert run_spec(tmp_path, spec(phase("build", "echo $LIT"), env=env)).output() == ["$HOME/x"]


def test_precedence_overrides_then_variables_then_spec(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  variables: {A: spec, B: spec, C: spec}\n"
    text = spec(phase("build", "echo $A $B $C"), env=env)
    ran = run_spec(tmp_path, text, variables={"A": "stage", "B": "stage"}, overrides={"A": "run"})
    assert ran.output() == ["run stage spec"]


def test_platform_variables_cannot_be_overridden(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  variables: {STACK_NAME: spec}\n"
    text = spec(phase("build", "STACK_NAME=cmd; export STACK_NAME", "echo $STACK_NAME"), env=env)
    ran = run_spec(
        tmp_path,
        text,
        overrides={"STACK_NAME": "run", "CODEBUILD_SRC_DIR": "/elsewhere"},
        platform_variables={"STACK_NAME": "shop"},
    )
    assert ran.output() == ["shop"]


def test_codebuild_variables_are_set(run_spec: RunSpec, shell_kind: str, tmp_path: Path) -> None:
    command = 'echo "$CODEBUILD_SRC_DIR $CODEBUILD_BUILD_SUCCEEDING ${CODEBUILD_START_TIME:+set}"'
    ran = run_spec(tmp_path, spec(phase("build", command)))
    assert ran.output() == [f"{workdir_seen(shell_kind, tmp_path)} 1 set"]


def test_secrets_are_masked_on_screen_and_in_log(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  secrets-manager: {TOKEN: api-token}\n"
    command = 'echo "key=$TOKEN."; printf \'%s\' "$TOKEN" | fold -w 3; echo'
    ran = run_spec(
        tmp_path, spec(phase("build", command), env=env), secrets={"api-token": "pa55w0rd!"}
    )
    assert ran.output() == ["key=***.", "***", "***", "***"]
    log = ran.result.log_path.read_text()
    assert "pa55" not in log
    assert "key=***." in log


def test_missing_secret_is_an_error_naming_it(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  parameter-store: {DB: db-password}\n"
    with pytest.raises(ConfigError, match="secret 'db-password', which was not given"):
        run_spec(tmp_path, spec(phase("build", "true"), env=env))


def test_exported_variables_captured_after_post_build(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  variables: {A: one}\n  exported-variables: [A, B, UNSET]\n"
    text = spec(phase("build", "B=built"), phase("post_build", "A=post"), env=env)
    assert run_spec(tmp_path, text).result.exported == {"A": "post", "B": "built", "UNSET": ""}


def test_exported_variables_from_build_when_post_build_skipped(
    run_spec: RunSpec, tmp_path: Path
) -> None:
    env = "env:\n  exported-variables: [B]\n"
    build = phase("build", "B=built", "false", extra="    on-failure: ABORT\n")
    text = spec(build, phase("post_build", "B=post"), env=env)
    assert run_spec(tmp_path, text).result.exported == {"B": "built"}


def test_command_timeout_kills_the_process_group(run_spec: RunSpec, tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    command = "(sleep 5; touch survived) & sleep 5"
    ran = run_spec(tmp_path, spec(phase("build", command)), command_timeout=0.5, kill_grace=0.5)
    assert ran.statuses() == {"build": "FAILED"}
    assert ran.result.phases[0].exit_code == 124
    messages = [line.text for line in ran.lines if line.kind is LineKind.MESSAGE]
    assert any("timed out after 0.5 seconds" in m for m in messages)
    assert not marker.exists()


def test_log_file_lines_have_utc_timestamp_and_phase(run_spec: RunSpec, tmp_path: Path) -> None:
    ran = run_spec(tmp_path, spec(phase("install", "echo hello")))
    lines = ran.result.log_path.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert any(re.fullmatch(stamp + r" \[install\] hello", line) for line in lines)
    assert all(re.match(stamp + r" \[\w+\] ", line) for line in lines)


def test_nonexistent_workdir_is_a_usage_error(run_spec: RunSpec, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"workdir .*missing does not exist") as caught:
        run_spec(tmp_path, spec(phase("build", "true")), workdir=tmp_path / "missing")
    assert caught.value.exit_code == 2


def test_unknown_run_as_user_is_an_error(run_spec: RunSpec, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Linux user named 'no-such-user'"):
        run_spec(tmp_path, "version: 0.2\nrun-as: no-such-user\nphases: {}\n")


def test_run_as_runs_as_that_user(run_spec: RunSpec, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    text = spec(phase("build", "id -un", extra="    run-as: nobody\n"))
    ran = run_spec(tmp_path, text)
    assert ran.output() == ["nobody"]


def test_artifacts_are_copied(run_spec: RunSpec, tmp_path: Path) -> None:
    artifacts = "artifacts:\n  base-directory: out\n  files:\n    - '**/*.txt'\n"
    text = spec(phase("build", "mkdir -p out/a && echo 1 > out/a/x.txt && echo 2 > out/y.bin"))
    ran = run_spec(tmp_path, text + artifacts, artifacts_dir=tmp_path / "dist")
    assert ran.statuses() == {"build": "SUCCEEDED", "artifacts": "SUCCEEDED"}
    assert (tmp_path / "dist" / "a" / "x.txt").read_text() == "1\n"
    assert not (tmp_path / "dist" / "y.bin").exists()


def test_artifacts_discard_paths(run_spec: RunSpec, tmp_path: Path) -> None:
    artifacts = "artifacts:\n  discard-paths: yes\n  files: [out/a/x.txt]\n"
    text = spec(phase("build", "mkdir -p out/a && echo 1 > out/a/x.txt"))
    run_spec(tmp_path, text + artifacts, artifacts_dir=tmp_path / "dist")
    assert (tmp_path / "dist" / "x.txt").exists()


def test_an_artifact_that_is_a_link_out_of_the_source_is_not_copied(
    run_spec: RunSpec, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-platform-secret"
    outside.write_text("the platform's secret\n")
    artifacts = "artifacts:\n  files: ['out/*']\n"
    command = f"mkdir -p out/dir && ln -s {outside} out/key && ln -s {outside.parent} out/up"
    ran = run_spec(
        tmp_path, spec(phase("build", command)) + artifacts, artifacts_dir=tmp_path / "d"
    )
    assert ran.statuses() == {"build": "SUCCEEDED", "artifacts": "FAILED"}
    messages = [line.text for line in ran.lines if line.kind is LineKind.MESSAGE]
    assert any("follows no symbolic link" in m for m in messages)
    assert not (tmp_path / "d" / "key").exists()
    assert "the platform's secret" not in "".join(
        p.read_text() for p in (tmp_path / "d").rglob("*") if p.is_file()
    )


def test_artifacts_pattern_without_match_fails_the_build(run_spec: RunSpec, tmp_path: Path) -> None:
    artifacts = "artifacts:\n  files: [missing.jar]\n"
    ran = run_spec(tmp_path, spec(phase("build", "true")) + artifacts, artifacts_dir=tmp_path / "d")
    assert ran.statuses() == {"build": "SUCCEEDED", "artifacts": "FAILED"}
    assert ran.result.status is Status.FAILED


def test_background_processes_are_stopped_when_the_run_ends(
    run_spec: RunSpec, shell_kind: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    ran = run_spec(tmp_path, spec(phase("build", "sleep 30 & echo $! > pid", "true")))
    messages = [line.text for line in ran.lines if line.kind is LineKind.MESSAGE]
    assert any(m.startswith("Stopped background processes of group") for m in messages)
    if shell_kind == "container":
        return  # the container is gone, and its processes with it
    status = Path(f"/proc/{pid_file.read_text().strip()}/status")
    deadline = time.monotonic() + 2
    while status.exists() and "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_exported_values_are_masked(run_spec: RunSpec, tmp_path: Path) -> None:
    env = "env:\n  secrets-manager: {PW: pw}\n  exported-variables: [URL]\n"
    text = spec(phase("build", 'URL="https://u:$PW@host"'), env=env)
    ran = run_spec(tmp_path, text, secrets={"pw": "s3cret"})
    assert ran.result.exported == {"URL": "https://u:***@host"}


def test_the_aws_stand_in_is_executable_posix_sh() -> None:
    tools = [TOOLS_DIR / "aws", *sorted((TOOLS_DIR / "aws.d").iterdir())]
    assert [tool.name for tool in tools] == ["aws", "ecr-get-login-password"]
    for tool in tools:
        assert tool.stat().st_mode & 0o111 == 0o111, tool
        checked = subprocess.run(["dash", "-n", str(tool)], capture_output=True, timeout=10)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.integration
def test_a_build_image_without_bash_defaults_to_sh_and_still_has_aws(tmp_path: Path) -> None:
    text = spec(phase("build", 'echo "[${BASH_VERSION:-}]"', "aws sts get-caller-identity 2>&1"))
    spec_, _ = load_buildspec(text)
    lines: list[LogLine] = []
    settings = RunSettings(workdir=tmp_path, log_path=tmp_path / "logs" / "build.log")
    shell = ContainerShell(ContainerSettings(source=tmp_path, image="busybox:latest"))
    result = run_buildspec(spec_, settings, sink=lines.append, shell=shell)
    output = [line.text for line in lines if line.kind is LineKind.OUTPUT]
    assert output == ["[]", "aws: not supported by Stackyard: aws sts get-caller-identity"]
    assert result.phases[0].exit_code == 2


class _WaitingProxyShell(LocalShell):
    """A host shell with a Docker API of its own that, during each command, says from its
    own thread why a request waits (as the build proxy does for a held local name)."""

    def __init__(self) -> None:
        super().__init__()
        self.notice: Callable[[str], None] | None = None
        self.heard: list[bool] = []  # whether a notice was set, at each hear

    def hear(self, notice: Callable[[str], None] | None) -> None:
        self.notice = notice
        self.heard.append(notice is not None)

    def run(self, command: Command, on_output: OutputCallback) -> CommandOutcome:
        notice = self.notice
        assert notice is not None
        proxy = threading.Thread(target=notice, args=("waiting for builtimage (s3cr3t)",))
        proxy.start()
        proxy.join(timeout=10)
        return super().run(command, on_output)


def test_why_a_command_s_docker_request_waits_is_said_in_its_phase_masked(
    tmp_path: Path,
) -> None:
    spec_, _ = load_buildspec(spec(phase("build", "echo built")))
    lines: list[LogLine] = []
    settings = RunSettings(
        workdir=tmp_path, log_path=tmp_path / "logs" / "build.log", secrets={"KEY": "s3cr3t"}
    )
    shell = _WaitingProxyShell()
    run_buildspec(spec_, settings, sink=lines.append, shell=shell)
    said = [(line.phase, line.kind, line.text) for line in lines if "builtimage" in line.text]
    assert said == [("build", LineKind.MESSAGE, "waiting for builtimage (***)")]
    assert shell.heard == [True, False]  # heard while the command ran, not after
    assert "waiting for builtimage (***)" in settings.log_path.read_text()
