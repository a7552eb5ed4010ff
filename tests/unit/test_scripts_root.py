"""The README's commands as root without sudo, and as a user with and without sudo.

scripts/demo, scripts/test and scripts/setup-host source scripts/lib/root.sh first. These
tests run its check (and the scripts' first lines) with a PATH that holds only the tools
it needs: a user without sudo is told how to become root, a user with sudo gets the
script run again through it, and root just goes on. The user cases run as ``nobody``
(setpriv), so the test suite must run as root, as ./scripts/test makes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("bash", "basename", "dirname", "grep")
# A stand-in for sudo that only prints the command it was asked to run, one word a line:
# what the scripts hand to sudo is the thing under test, not sudo itself.
RECORDING_SUDO = '#!/bin/bash\nprintf "%s\\n" sudo "$@"\n'


@pytest.fixture
def place() -> Iterator[Path]:
    """A copy of the scripts and a bin/ of the tools they need, readable by nobody."""
    directory = Path(tempfile.mkdtemp(prefix="stackyard-root-check-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        shutil.copytree(ROOT / "scripts", directory / "scripts")
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found is not None, f"{tool} is not installed"
            (bin_dir / tool).symlink_to(found)
        for path in [directory, *directory.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


def run(
    place: Path, argv: list[str], *, as_nobody: bool, **env: str
) -> subprocess.CompletedProcess[str]:
    assert os.geteuid() == 0, "these tests switch to nobody: run them as root"
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is not installed"
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*(nobody if as_nobody else []), *argv],
        env={"PATH": str(place / "bin"), "HOME": "/nonexistent", **env},
        cwd=place,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check(place: Path, *, as_nobody: bool, **env: str) -> subprocess.CompletedProcess[str]:
    """Source root.sh and call run_as_root as scripts/demo does, then say it went on."""
    script = f'. scripts/lib/root.sh; run_as_root "{place}/scripts/demo" one "two words"'
    bash = str(place / "bin" / "bash")
    return run(place, [bash, "-c", f"{script}; echo went on"], as_nobody=as_nobody, **env)


def test_root_without_sudo_goes_on(place: Path) -> None:
    done = check(place, as_nobody=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "went on\n", "")


def test_a_user_without_sudo_is_told_to_become_root(place: Path) -> None:
    done = check(place, as_nobody=True)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "demo: must run as root: it installs packages and starts dockerd.\n"
        "demo: there is no sudo here; become root (su -) and run it again.\n"
    )


def test_a_user_with_sudo_runs_the_script_again_through_it_with_its_settings(
    place: Path,
) -> None:
    sudo = place / "bin" / "sudo"
    sudo.write_text(RECORDING_SUDO)
    sudo.chmod(0o755)
    done = check(place, as_nobody=True, STACKYARD_DATA_DIR="/tmp/sy", OTHER="not passed")
    assert done.returncode == 0  # the stand-in's status: exec replaced the shell
    assert done.stdout.splitlines() == [
        "sudo",
        "env",
        "STACKYARD_ROOT_TRIED=1",
        "STACKYARD_DATA_DIR=/tmp/sy",
        f"{place}/scripts/demo",
        "one",
        "two words",
    ]
    assert "running it again with sudo" in done.stderr


def test_still_not_root_after_sudo_stops_instead_of_looping(place: Path) -> None:
    done = check(place, as_nobody=True, STACKYARD_ROOT_TRIED="1")
    assert done.returncode == 1
    assert "still not root after sudo (uid 65534)" in done.stderr


@pytest.mark.parametrize("script", ["demo", "test", "setup-host"])
def test_each_readme_script_checks_first_and_does_nothing_else(place: Path, script: str) -> None:
    done = run(place, [str(place / "scripts" / script)], as_nobody=True)
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"{script}: there is no sudo here; become root (su -) and run it again.\n"
    )
    assert done.stdout == ""
