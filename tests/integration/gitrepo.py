"""Real git repositories for integration tests, made from the example apps."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IDENTITY = ["-c", "user.name=Stackyard Tests", "-c", "user.email=tests@stackyard.invalid"]


class GitRepo:
    """A repository in a temporary folder, with helpers to change files and commit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_example(cls, example: str, dest: Path, branch: str = "main") -> GitRepo:
        shutil.copytree(EXAMPLES / example, dest)
        repo = cls(dest)
        repo.git("init", "-q", "-b", branch)
        repo.commit(f"{example}: first commit")
        return repo

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *IDENTITY, *args], cwd=self.path, capture_output=True, text=True, check=True
        )
        return result.stdout.strip()

    def write(self, relative: str, content: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def push(self, remote: str, branch: str = "main") -> str:
        """``git push`` of ``branch`` to ``remote`` (a platform's git remote URL, added as
        the remote ``stackyard``); what git printed on stderr (the platform's reply)."""
        self.git("remote", "add", "stackyard", remote)
        pushed = subprocess.run(
            ["git", "push", "stackyard", branch],
            cwd=self.path, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return pushed.stderr

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def set_version(self, version: str) -> str:
        """Change the example's VERSION marker and commit; returns the new sha."""
        index = self.path / "www" / "index.html"
        text = index.read_text(encoding="utf-8")
        marker = text[text.index("VERSION=") :].split()[0].split("<")[0]
        index.write_text(text.replace(marker, f"VERSION={version}"), encoding="utf-8")
        return self.commit(f"version {version}")
