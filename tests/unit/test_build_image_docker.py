"""The build image's ``docker`` dispatcher (scripts/lib/build-image-docker.sh), run by the
shells build images have (dash, busybox ash) with its two CLIs replaced by stand-ins that
say which one ran and with what: builds stay on Debian's CLI, everything else goes to the
fast one, every argument passed on as it came."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISPATCHER = ROOT / "scripts" / "lib" / "build-image-docker.sh"
FAST = "/usr/local/libexec/stackyard/docker"  # where scripts/setup-host puts each CLI
DEBIAN = "/usr/bin/docker"
SHELLS = [shell for shell in ("dash", "busybox") if shutil.which(shell)]


@pytest.fixture
def dispatcher(tmp_path: Path) -> Path:
    text = DISPATCHER.read_text()
    assert text.count(FAST) == 1
    assert text.count(f"exec {DEBIAN} ") == 1
    for name, path in (("fast", FAST), ("debian", DEBIAN)):
        stand_in = tmp_path / name
        stand_in.write_text(
            f'#!/bin/sh\nprintf {name}; for a; do printf " [%s]" "$a"; done; echo\n'
        )
        stand_in.chmod(0o755)
        text = text.replace(path, str(stand_in))
    script = tmp_path / "docker"
    script.write_text(text)
    return script


def run(shell: str, script: Path, *args: str) -> str:
    argv = [shell, "sh", str(script), *args] if shell == "busybox" else [shell, str(script), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


def test_the_test_has_a_shell_to_run_it() -> None:
    assert "dash" in SHELLS  # Debian's /bin/sh, as in the build image


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "args",
    [
        ["build", "-t", "app", "."],
        ["image", "build", "."],
        ["builder", "prune", "-f"],
        ["buildx", "ls"],
        ["-H", "unix:///run/x.sock", "build", "."],
        ["--host=unix:///run/x.sock", "build", "."],
        ["--config", "/tmp/c", "-l", "debug", "image", "build", "."],
        ["-D", "build", "--build-arg", "A=b c", "."],
    ],
)
def test_builds_run_on_debians_cli(shell: str, dispatcher: Path, args: list[str]) -> None:
    assert run(shell, dispatcher, *args) == "debian " + " ".join(f"[{a}]" for a in args)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "args",
    [
        ["login", "--username", "AWS", "--password-stdin", "127.0.0.1:5000"],
        ["tag", "app:latest", "127.0.0.1:5000/app:build"],
        ["push", "build"],  # a repository named build: the command is push
        ["image", "inspect", "build"],
        ["-c", "build", "ps"],  # a context named build
        ["--context", "build", "version"],
        ["--version"],
        [],
        ["run", "--rm", "busybox", "echo", "a  b"],
    ],
)
def test_other_commands_run_on_the_fast_cli(shell: str, dispatcher: Path, args: list[str]) -> None:
    assert run(shell, dispatcher, *args) == " ".join(["fast", *(f"[{a}]" for a in args)])
