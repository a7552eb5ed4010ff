"""GitSource keeps the Source contract, against real git repositories made in tmp_path."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackyard.source.git import GitSource, git_env

from ..source_contract import FIRST_FILES, SourceContract

IDENTITY = ["-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.com"]


@dataclass
class GitUpstream:
    path: Path

    @property
    def url(self) -> str:
        return str(self.path)

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *IDENTITY, *args],
            cwd=self.path,
            env=git_env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip()

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        for name, text in files.items():
            path = self.path / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.tip()

    def tag(self, name: str, sha: str) -> None:
        self.git("tag", name, sha)

    def branch(self, name: str) -> None:
        self.git("branch", name)

    def delete_branch(self, name: str) -> None:
        self.git("branch", "-D", name)

    def tip(self) -> str:
        return self.git("rev-parse", "main")


class TestGitSourceContract(SourceContract):
    @pytest.fixture
    def source(self, tmp_path: Path) -> GitSource:
        return GitSource(tmp_path / "cache")

    @pytest.fixture
    def upstream(self, tmp_path: Path) -> GitUpstream:
        upstream = GitUpstream(tmp_path / "upstream")
        upstream.path.mkdir()
        upstream.git("init", "-q", "-b", "main")
        upstream.commit(FIRST_FILES, "First commit")
        return upstream
