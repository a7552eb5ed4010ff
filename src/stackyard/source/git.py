"""`GitSource`: the `Source` seam on the ``git`` command line, with a bare cache per stack.

The pipeline resolves a push to a commit here, reads stackyard.yml at that commit and
builds from a worktree; argv lists are built by small functions and run by `_run`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from stackyard.errors import (
    ComponentError,
    NotFoundError,
    PermanentError,
    RetryableError,
    UsageError,
)
from stackyard.source.base import (
    FULL_SHA,
    Commit,
    Source,
    check_ref_name,
    check_sha,
    check_stack_name,
    repo_relative,
)

FETCH_TIMEOUT = 300.0
"""Seconds for any git call that talks to a remote (fetch, submodules, worktree add)."""
LOCAL_TIMEOUT = 30.0
"""Seconds for a git call that only reads the local cache."""

_SHORT_SHA = re.compile(r"[0-9a-fA-F]{4,64}")

# Inherited variables that would point git at another repository, e.g. when Stackyard
# runs from a git hook (hooks set GIT_DIR). Same list as `git rev-parse --local-env-vars`.
_REPO_ENV = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
)

# Settings from a user's ~/.gitconfig that would change what a checkout contains.
_CONFIG_OVERRIDES = (
    "core.autocrlf=false",
    "core.eol=lf",
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "advice.detachedHead=false",
    "gc.autoDetach=false",
    "protocol.file.allow=always",
)

# What `git rev-parse --verify` says when a revision does not exist (an answer, not a failure).
_NO_SUCH_REVISION = ("Needed a single revision", "unknown revision")

# Fragments of git's stderr that mean "try again later" rather than "fix something".
_TRANSIENT = (
    "connection refused",
    "connection timed out",
    "operation timed out",
    "connection reset",
    "remote end hung up unexpectedly",
    "early eof",
    "temporary failure",
    "network is unreachable",
    "the requested url returned error: 5",
    "the requested url returned error: 429",
    "could not lock",
    "unable to create",
)


@dataclass(frozen=True)
class GitResult:
    """What one git call printed."""

    stdout: bytes
    stderr: str


class GitFailed(Exception):
    """A git call exited non-zero; internal, always translated before it leaves this module."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}")
        self.returncode = returncode
        self.stderr = stderr

    @property
    def line(self) -> str:
        """git's own error line: the first ``fatal:``/``error:`` line, else the first line."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        for line in lines:
            if line.startswith(("fatal:", "error:")):
                return line
        return lines[0] if lines else f"git exited with status {self.returncode}"


class GitSource(Source):
    """A cache of bare repositories, one per stack, at ``<cache_dir>/<stack>.git``.

    The first `sync` of a stack creates its cache with a fetch of all branches and tags;
    later ones fetch with ``--prune``. Checkouts are ``git worktree`` work trees of the
    cache, so ``git rev-parse HEAD`` works inside them. A lock file per stack
    (``<cache_dir>/<stack>.lock``, ``flock``) serialises everything that writes to the
    cache, across threads and processes.
    """

    name: ClassVar[str] = "git"
    supports_head: ClassVar[bool] = True

    def __init__(
        self,
        cache_dir: Path,
        *,
        fetch_timeout: float = FETCH_TIMEOUT,
        local_timeout: float = LOCAL_TIMEOUT,
    ) -> None:
        self.cache_dir = cache_dir
        self.fetch_timeout = fetch_timeout
        self.local_timeout = local_timeout

    # -- the seam -------------------------------------------------------------------

    def sync(self, stack: str, url: str) -> None:
        repo = self.repo_path(stack)
        url = normalise_url(url)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._locked(stack):
            if repo.exists():
                if self._origin_url(repo) != url:
                    self._git(repo, "remote", "set-url", "origin", url, op="set the remote URL")
                self._fetch(repo, url)
            else:
                self._create(stack, repo, url)

    def resolve(self, stack: str, url: str, ref: str | None, branch: str) -> Commit:
        repo = self.repo_path(stack)
        if ref is not None and FULL_SHA.fullmatch(ref) and repo.exists():
            # A full sha names one commit forever: when the cache has it, nothing to fetch
            # (a pipeline run resolves its commit, then its build resolves it again).
            sha = self._verify(repo, f"{ref}^{{commit}}")
            if sha is not None:
                return self._commit(repo, sha)
        self.sync(stack, url)
        if ref is None:
            check_ref_name(branch, "branch")
            sha = self._verify(repo, f"refs/heads/{branch}^{{commit}}")
            if sha is None:
                branches = self.branches(stack)
                raise NotFoundError(
                    f"branch {branch!r} not found in {redact_url(url)}; branches: "
                    + (", ".join(branches) if branches else "none (the repository is empty)"),
                    hint="push the branch, or set the stack's branch to one of these",
                )
            return self._commit(repo, sha)
        check_ref_name(ref, "ref")
        sha = self._resolve_ref(repo, ref)
        if sha is None:
            raise NotFoundError(
                f"no branch, tag or commit {ref!r} in {redact_url(url)}",
                hint="check the name or sha; a commit must be reachable from a branch or tag",
            )
        return self._commit(repo, sha)

    def checkout(self, stack: str, sha: str, dest: Path, *, standalone: bool = False) -> Path:
        repo = self._cached_repo(stack)
        self._require_commit(repo, stack, sha)
        if dest.exists() and any(dest.iterdir()):
            raise UsageError(f"cannot check out {sha[:12]} into {dest}: it is not empty")
        dest = dest.absolute()
        dest.parent.mkdir(parents=True, exist_ok=True)
        if standalone:
            return self._standalone_checkout(repo, sha, dest)
        # Submodule init writes the cache's shared config, so it runs under the lock too.
        with self._locked(stack):
            self._git(
                repo,
                "worktree",
                "add",
                "--detach",
                "--",
                str(dest),
                sha,
                op=f"check out {sha[:12]}",
                timeout=self.fetch_timeout,
            )
            try:
                if (dest / ".gitmodules").is_file():
                    self._update_submodules(dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                self._git(repo, "worktree", "prune", op="prune worktrees")
                raise
        return dest

    def _standalone_checkout(self, repo: Path, sha: str, dest: Path) -> Path:
        """A repository of its own at ``dest`` with the one commit (``--depth 1``, as
        CodeBuild clones): it reads the cache but writes nothing to it, so no lock."""
        try:
            for argv in standalone_checkout_argv(repo, sha, dest):
                _run(argv, op=f"check out {sha[:12]}", timeout=self.fetch_timeout)
            if (dest / ".gitmodules").is_file():
                self._update_submodules(dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return dest

    def remove_checkout(self, stack: str, dest: Path) -> None:
        repo = self.repo_path(stack)
        shutil.rmtree(dest)
        if repo.exists():
            with self._locked(stack):
                self._git(repo, "worktree", "prune", op="prune worktrees")

    def read_file(self, stack: str, sha: str, path: str) -> bytes | None:
        repo = self._cached_repo(stack)
        check_sha(sha)
        relative = repo_relative(path)
        try:  # one git call when the file is there (every pipeline run reads stackyard.yml)
            return self._git(
                repo, "cat-file", "blob", f"{sha}:{relative}", op=f"read {path}", may_fail=True
            ).stdout
        except GitFailed as exc:
            # Only "no such commit" and "not a file there" are answers; git failing to read
            # a file that is there (a damaged cache) is an error, never "there is none".
            self._require_commit(repo, stack, sha)
            if self._entry_type(repo, sha, relative) != "blob":
                return None
            raise ComponentError(
                f"git could not read {path} at commit {sha[:12]} in {repo}: {exc.line}",
                hint=f"if the cache is damaged, delete {repo}; the next sync fetches it again",
            ) from exc

    def changed_paths(self, stack: str, old_sha: str | None, new_sha: str) -> list[str]:
        repo = self._cached_repo(stack)
        self._require_commit(repo, stack, new_sha)
        if old_sha is not None:
            check_sha(old_sha)
        if old_sha is None or self._verify(repo, f"{old_sha}^{{commit}}") is None:
            argv = ["ls-tree", "-r", "-z", "--name-only", new_sha]
        else:
            argv = ["diff", "--name-only", "-z", "--no-renames", old_sha, new_sha, "--"]
        output = self._git(repo, *argv, op="list changed paths").stdout
        return [part.decode("utf-8", "surrogateescape") for part in output.split(b"\0") if part]

    def head(self, url: str, branch: str) -> str | None:
        check_ref_name(branch, "branch")
        url = normalise_url(url)
        try:
            out = _run(
                git_argv(*ls_remote_argv(url, branch)),
                op=f"read {branch} of {redact_url(url)}",
                timeout=self.fetch_timeout,
            )
        except GitFailed as exc:
            raise remote_error(url, exc) from exc
        return parse_ls_remote(out.stdout.decode(errors="replace"), branch)

    # -- extras used by the pipeline and the CLI ------------------------------------

    def remove(self, stack: str) -> None:
        """Delete the stack's cache (the stack was deleted)."""
        with self._locked(stack):
            shutil.rmtree(self.repo_path(stack), ignore_errors=True)

    def repo_path(self, stack: str) -> Path:
        """Where the stack's bare cache lives (it may not exist yet)."""
        check_stack_name(stack)
        return self.cache_dir / f"{stack}.git"

    def branches(self, stack: str) -> list[str]:
        """The branch names in the stack's cache, sorted."""
        repo = self._cached_repo(stack)
        output = self._git(
            repo, "for-each-ref", "--format=%(refname:lstrip=2)", "refs/heads/", op="list branches"
        ).stdout
        return sorted(output.decode().split())

    # -- internals ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, stack: str) -> Iterator[None]:
        lock_path = self.cache_dir / f"{stack}.lock"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _create(self, stack: str, repo: Path, url: str) -> None:
        # Build the cache under a temporary name, so a failed first fetch leaves nothing
        # that a later sync would take for a valid cache.
        staging = Path(tempfile.mkdtemp(prefix=f".{stack}.git-", dir=self.cache_dir))
        try:
            for argv in create_cache_argv(url):
                self._git(staging, *argv, op="create the repository cache")
            self._fetch(staging, url)
            staging.rename(repo)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _fetch(self, repo: Path, url: str) -> None:
        try:
            self._git(
                repo,
                *FETCH_ARGV,
                op=f"fetch {redact_url(url)}",
                timeout=self.fetch_timeout,
                may_fail=True,
            )
        except GitFailed as exc:
            raise remote_error(url, exc) from exc

    def _update_submodules(self, worktree: Path) -> None:
        argv = ["submodule", "update", "--init", "--recursive"]
        try:
            _run(
                git_argv(*argv, work_tree=worktree),
                op="update submodules",
                timeout=self.fetch_timeout,
            )
        except GitFailed as exc:
            error = remote_error("a submodule", exc)
            error.hint = "make every submodule URL in .gitmodules reachable from this host"
            raise error from exc

    def _origin_url(self, repo: Path) -> str | None:
        """The cache's remote URL; None when it has none (``git config`` exits 1 then)."""
        out = self._lookup(repo, "config", "--get", "remote.origin.url", op="read the remote URL")
        return None if out is None else out.stdout.decode().strip()

    def _entry_type(self, repo: Path, sha: str, path: str) -> str | None:
        """``blob``, ``tree`` or ``commit`` (a submodule) for ``path`` at ``sha``; None when
        the commit has no such path."""
        out = self._git(repo, "ls-tree", "-z", sha, "--", path, op=f"look up {path}").stdout
        entry = out.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        fields = entry.split(None, 2)  # "<mode> <type> <object>\t<path>"
        return fields[1] if len(fields) >= 2 else None

    def _resolve_ref(self, repo: Path, ref: str) -> str | None:
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}"):
            sha = self._verify(repo, f"{candidate}^{{commit}}")
            if sha is not None:
                return sha
        if not _SHORT_SHA.fullmatch(ref):
            return None
        try:
            out = self._git(
                repo,
                "rev-parse",
                "--verify",
                f"{ref.lower()}^{{commit}}",
                op="resolve",
                may_fail=True,
            )
        except GitFailed as exc:
            if "ambiguous" in exc.stderr:
                raise UsageError(
                    f"the short sha {ref!r} matches more than one object",
                    hint="give more hex digits of the commit",
                ) from exc
            if any(answer in exc.stderr for answer in _NO_SUCH_REVISION):
                return None
            raise self._damaged(repo, f"resolve {ref!r}", exc) from exc
        return out.stdout.decode().strip()

    def _verify(self, repo: Path, rev: str) -> str | None:
        """The object ``rev`` names; None when there is none (``--quiet`` exits 1 then)."""
        out = self._lookup(repo, "rev-parse", "--verify", "--quiet", rev, op=f"resolve {rev}")
        return None if out is None else out.stdout.decode().strip()

    def _lookup(self, repo: Path, *args: str, op: str) -> GitResult | None:
        """A git call that exits 1 when what it looks for is not there (``rev-parse
        --verify --quiet``, ``config --get``): None then; any other failure (a damaged
        cache, a bad config: git exits 128 or 3) is a ComponentError with git's own line."""
        try:
            return self._git(repo, *args, op=op, may_fail=True)
        except GitFailed as exc:
            if exc.returncode == 1:
                return None
            raise self._damaged(repo, op, exc) from exc

    def _commit(self, repo: Path, sha: str) -> Commit:
        fmt = "--format=%H%x00%s%x00%an <%ae>%x00%cI"
        out = self._git(repo, "log", "-1", fmt, sha, "--", op=f"read commit {sha[:12]}").stdout
        full, subject, author, committed = out.decode(errors="replace").strip().split("\0")
        return Commit(full, subject, author, datetime.fromisoformat(committed))

    def _cached_repo(self, stack: str) -> Path:
        repo = self.repo_path(stack)
        if not repo.exists():
            raise NotFoundError(
                f"stack {stack!r} has no repository cache at {repo}",
                hint="resolve a commit first: that fetches the repository",
            )
        return repo

    def _require_commit(self, repo: Path, stack: str, sha: str) -> None:
        check_sha(sha)
        if self._verify(repo, f"{sha}^{{commit}}") is None:
            raise NotFoundError(
                f"commit {sha} is not in the repository cache of stack {stack!r}",
                hint="resolve it first; a commit must be reachable from a branch or tag",
            )

    def _git(
        self,
        repo: Path,
        *args: str,
        op: str,
        timeout: float | None = None,
        may_fail: bool = False,
    ) -> GitResult:
        """Run git on a cache. A failure raises GitFailed if ``may_fail``, else ComponentError."""
        argv = git_argv(*args, git_dir=repo)
        try:
            return _run(argv, op=op, timeout=timeout or self.local_timeout)
        except GitFailed as exc:
            if may_fail:
                raise
            raise self._damaged(repo, op, exc) from exc

    @staticmethod
    def _damaged(repo: Path, op: str, exc: GitFailed) -> ComponentError:
        return ComponentError(
            f"git could not {op} in {repo}: {exc.line}",
            hint=f"if the cache is damaged, delete {repo}; the next sync fetches it again",
        )


# -- deciding: argv and environment, no process started ----------------------------

FETCH_ARGV = ("fetch", "--prune", "--no-write-fetch-head", "--quiet", "origin")


def create_cache_argv(url: str) -> list[list[str]]:
    """The git calls that turn an empty directory into a cache of ``url`` (before fetch)."""
    return [
        ["init", "--quiet", "--bare"],
        ["remote", "add", "origin", url],
        ["config", "--replace-all", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"],
        ["config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"],
    ]


def ls_remote_argv(url: str, branch: str) -> list[str]:
    """Ask ``url`` for one branch's tip; ``--`` keeps a URL from being read as an option."""
    return ["ls-remote", "--heads", "--", url, f"refs/heads/{branch}"]


def parse_ls_remote(output: str, branch: str) -> str | None:
    """The sha of ``refs/heads/<branch>`` in ``git ls-remote`` output, None if absent."""
    wanted = f"refs/heads/{branch}"
    for line in output.splitlines():
        sha, _, ref = line.strip().partition("\t")
        if ref == wanted and FULL_SHA.fullmatch(sha):
            return sha
    return None


def standalone_checkout_argv(repo: Path, sha: str, dest: Path) -> list[list[str]]:
    """A new repository at ``dest`` holding commit ``sha`` of the cache ``repo``, checked
    out: protocol v2 lets a fetch name any commit the cache has. No template: no sample
    hooks in ``.git`` (which a Dockerfile's context would otherwise carry). The fetch keeps
    what it receives as one pack (``fetch.unpackLimit=1``: one ``index-pack`` instead of
    a loose file per object) and starts no ``git maintenance`` afterwards (a new
    repository has nothing to maintain): about a third of its CPU time, which every
    build in a container waits for (docs/benchmarks.md, "Build isolation")."""
    return [
        git_argv("init", "--quiet", "--template=", str(dest)),
        git_argv(
            "-c", "protocol.version=2", "-c", "fetch.unpackLimit=1", "fetch", "--quiet",
            "--depth", "1", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
            f"file://{repo}", sha, work_tree=dest,
        ),
        git_argv("checkout", "--quiet", "--detach", sha, work_tree=dest),
    ]  # fmt: skip


def git_argv(*args: str, git_dir: Path | None = None, work_tree: Path | None = None) -> list[str]:
    """``git`` with Stackyard's config overrides, aimed at a cache or a work tree."""
    argv = ["git"]
    for setting in _CONFIG_OVERRIDES:
        argv += ["-c", setting]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    if work_tree is not None:
        argv += ["-C", str(work_tree)]
    return [*argv, *args]


def git_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for git: never prompt, C locale, no system config, no GIT_DIR."""
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name in _REPO_ENV or name.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")):
            del env[name]
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANG="C", GIT_CONFIG_NOSYSTEM="1")
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        # BatchMode: fail instead of asking for a passphrase or a host key confirmation.
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def normalise_url(url: str) -> str:
    """``url`` as git should see it: URLs and ``user@host:path`` as given, paths absolute."""
    url = url.strip()
    if not url or url.startswith("-"):
        raise UsageError(f"invalid repository URL {url!r}", hint="give a path or a git URL")
    if "://" in url or _is_scp_like(url):
        return url
    return os.path.abspath(os.path.expanduser(url))


def redact_url(url: str) -> str:
    """``url`` without a password or token, fit for logs and error messages."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def remote_error(url: str, exc: GitFailed) -> PermanentError | RetryableError:
    """Translate a failed fetch: network trouble may pass, a wrong URL or access will not."""
    message = f"cannot fetch {redact_url(url)}: {exc.line}"
    if any(fragment in exc.stderr.lower() for fragment in _TRANSIENT):
        return RetryableError(message, hint="the remote may be down; it will be tried again")
    return PermanentError(
        message,
        hint="check the stack's repository URL, and that this host can read it "
        "(an SSH key or a token in the URL for private repositories)",
    )


def _is_scp_like(url: str) -> bool:
    # git's rule: a colon before the first slash means ``[user@]host:path`` over SSH.
    colon = url.find(":")
    slash = url.find("/")
    return colon > 0 and (slash == -1 or colon < slash)


# -- doing: the one place a git process starts --------------------------------------


def _run(argv: list[str], *, op: str, timeout: float) -> GitResult:
    """Run git; raise GitFailed on a non-zero exit, RetryableError on a timeout."""
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=git_env(),
            start_new_session=True,  # so a timeout can kill git's helpers (ssh, https) too
        )
    except FileNotFoundError as exc:
        raise PermanentError(
            "the git command is not installed", hint="install git on the Stackyard host"
        ) from exc
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise RetryableError(
            f"git timed out after {timeout:g} s trying to {op}",
            hint="check the network and the remote; the operation will be tried again",
        ) from exc
    error_text = stderr.decode(errors="replace")
    if process.returncode != 0:
        raise GitFailed(argv, process.returncode, error_text)
    return GitResult(stdout, error_text)
