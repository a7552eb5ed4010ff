"""Pushes, and the git remotes the platform hosts: one bare repository per stack.

The API's git routes call `HostedRemotes.ensure` before each request, build the
environment of ``git http-backend`` with `backend_environ` and read its answer with
`parse_cgi_head`. Every trigger (git push, webhook, poll) describes what moved as a `Push`
and asks `ignore_reason` whether it concerns the stack's branch. Only `ensure` starts a
process (``git init``); everything else returns plain data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stackyard.errors import ComponentError
from stackyard.source.base import check_stack_name
from stackyard.source.git import LOCAL_TIMEOUT, git_env

ZERO_SHA = "0" * 40
BRANCH_PREFIX = "refs/heads/"
BACKEND_TIMEOUT = 3600.0
"""Seconds one ``git http-backend`` exchange may last before it is killed."""

SMART_ROUTES = {
    ("GET", "info/refs"),
    ("POST", "git-upload-pack"),
    ("POST", "git-receive-pack"),
}
"""The smart HTTP requests served; the dumb protocol (objects/, HEAD) is not."""

SERVICES = ("git-upload-pack", "git-receive-pack")

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Push:
    """One ref that moved: ``before`` is None for a new ref, ``after`` None for a deletion."""

    ref: str
    before: str | None
    after: str | None
    changed_paths: tuple[str, ...] | None = None
    """The paths the pushed commits touch, when the trigger knows all of them (webhooks)."""

    @classmethod
    def from_shas(
        cls, ref: str, old: str, new: str, changed_paths: tuple[str, ...] | None = None
    ) -> Push:
        """A push from git's ``old new ref`` form, where all zeros means "no commit"."""
        return cls(ref, _sha_or_none(old), _sha_or_none(new), changed_paths)

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix(BRANCH_PREFIX) if self.ref.startswith(BRANCH_PREFIX) else None


def ignore_reason(push: Push, branch: str) -> str | None:
    """Why ``push`` starts no run of a stack that follows ``branch``; None if it starts one."""
    if push.branch is None:
        return f"{push.ref} is not a branch; only pushes to {branch} start a run"
    if push.branch != branch:
        return f"branch {push.branch} is not {branch}; only pushes to {branch} start a run"
    if push.after is None:
        return f"branch {branch} was deleted; nothing to build"
    return None


def parse_ref_updates(lines: str) -> list[Push]:
    """Pushes from the ``<old> <new> <ref>`` lines git gives a post-receive hook."""
    pushes = []
    for line in lines.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(_SHA.fullmatch(sha) for sha in parts[:2]):
            pushes.append(Push.from_shas(parts[2], parts[0], parts[1]))
    return pushes


def _sha_or_none(sha: str) -> str | None:
    return None if not sha or set(sha) == {"0"} else sha


# -- the hosted bare repositories ----------------------------------------------------


class HostedRemotes:
    """Bare repositories at ``<root>/<stack>.git`` that accept pushes over HTTP.

    Each has ``http.receivepack true``, its HEAD on the stack's branch (so a clone checks
    that branch out), and a post-receive hook that reports the push to the API.
    """

    def __init__(self, root: Path, *, python: str = sys.executable) -> None:
        self.root = root
        self.python = python

    def repo_path(self, stack: str) -> Path:
        check_stack_name(stack)
        return self.root / f"{stack}.git"

    def ensure(self, stack: str, branch: str) -> Path:
        """The stack's bare repository, created on first use; hook and HEAD kept current."""
        repo = self.repo_path(stack)
        if not repo.exists():
            self._create(stack, repo)
        _write_if_changed(repo / "hooks" / "post-receive", post_receive_hook(self.python), 0o755)
        _write_if_changed(repo / "HEAD", f"ref: {BRANCH_PREFIX}{branch}\n", 0o644)
        return repo

    def remove(self, stack: str) -> None:
        """Delete the stack's bare repository (the stack was deleted): a stack created again
        under the name starts from an empty remote, not the old history."""
        shutil.rmtree(self.repo_path(stack), ignore_errors=True)

    def _create(self, stack: str, repo: Path) -> None:
        # Made under a temporary name and renamed, so two first pushes racing each other
        # both end up with one complete repository.
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{stack}.git-", dir=self.root))
        try:
            for argv in create_remote_argv(staging):
                _git(argv, f"create the git remote of stack {stack!r}")
            try:
                staging.rename(repo)
            except OSError:
                if not repo.is_dir():
                    raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def create_remote_argv(repo: Path) -> list[list[str]]:
    """The git calls that make an empty directory a bare repository that accepts pushes."""
    git_dir = f"--git-dir={repo}"
    return [
        ["git", "init", "--quiet", "--bare", str(repo)],
        ["git", git_dir, "config", "http.receivepack", "true"],
        # A queued run may still fetch a commit a force push left unreachable: keep it.
        ["git", git_dir, "config", "gc.pruneExpire", "never"],
    ]


def post_receive_hook(python: str) -> str:
    """The hook git runs after a push: it sends the ref updates to the API, prints the answer.

    The API URL and the admin token come from the environment the API gave
    ``git http-backend``; nothing secret is written into the repository. A push that did
    not come through the platform (a local ``git push /path/stack.git``) starts nothing.
    """
    return f"""#!{python}
# Installed by Stackyard; rewritten on every push. Reports this push to the platform.
import json
import os
import sys
import urllib.error
import urllib.request

lines = sys.stdin.read()
url = os.environ.get("STACKYARD_HOOK_URL")
token = os.environ.get("STACKYARD_HOOK_TOKEN")
if not url or not token:
    print("Stackyard: this push did not come through the platform's git remote; "
          "no run started")
    sys.exit(0)
request = urllib.request.Request(
    url,
    data=json.dumps({{"updates": lines}}).encode(),
    method="POST",
    headers={{"Authorization": "Bearer " + token, "Content-Type": "application/json",
             "User-Agent": "stackyard-hook/1"}},
)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
try:
    with opener.open(request, timeout=120) as response:
        answer = json.load(response)
except urllib.error.HTTPError as exc:
    detail = exc.read().decode(errors="replace")[:500]
    print("Stackyard: the platform refused the push report (" + str(exc.code) + "): " + detail)
    sys.exit(1)
except (OSError, ValueError) as exc:
    print("Stackyard: could not report the push to the platform: " + str(exc))
    sys.exit(1)
for line in answer.get("messages", []):
    print("Stackyard: " + line)
"""


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    # Unique per thread: two requests of one stack may write the same file at once.
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(mode)
    temporary.replace(path)


def _git(argv: list[str], op: str) -> None:
    run_git(argv, op)


def run_git(argv: list[str], op: str, *, timeout: float = LOCAL_TIMEOUT) -> str:
    """Run a local git command (``argv`` starts with ``git``); its output, or a
    ComponentError saying what git could not do (``op``) and why."""
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=git_env(),
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComponentError(f"git could not {op}: {exc}") from exc
    if result.returncode != 0:
        raise ComponentError(
            f"git could not {op}: {result.stderr.decode(errors='replace').strip()}",
            hint="check that the data directory is writable",
        )
    return result.stdout.decode(errors="replace")


# -- git http-backend: the CGI exchange as data ---------------------------------------


@dataclass(frozen=True)
class BackendRequest:
    """What the API passes on to ``git http-backend`` from one HTTP request."""

    stack: str
    method: str
    path: str
    """Under the repository: ``info/refs``, ``git-upload-pack`` or ``git-receive-pack``."""
    query: str
    content_type: str = ""
    content_length: str = ""
    content_encoding: str = ""
    git_protocol: str = ""
    remote_user: str = ""
    remote_addr: str = ""


def backend_argv(repo: Path) -> list[str]:
    """``git http-backend`` with hooks taken from the repository, whatever ~/.gitconfig says."""
    return ["git", "-c", f"core.hooksPath={repo / 'hooks'}", "http-backend"]


def backend_environ(
    request: BackendRequest,
    *,
    root: Path,
    hook_url: str,
    hook_token: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The CGI environment of ``git http-backend`` for one request.

    Only the request headers http-backend understands are passed (so no ``Proxy:``
    header becomes ``HTTP_PROXY``). A gzip body is passed through as it came, with
    ``HTTP_CONTENT_ENCODING``: http-backend inflates it itself. The hook URL and the
    admin token ride along for the post-receive hook.
    """
    env = git_env(dict(base) if base is not None else None)
    env.update(
        GIT_PROJECT_ROOT=str(root),
        GIT_HTTP_EXPORT_ALL="1",
        GATEWAY_INTERFACE="CGI/1.1",
        REQUEST_METHOD=request.method,
        PATH_INFO=f"/{request.stack}.git/{request.path}",
        QUERY_STRING=request.query,
        REMOTE_USER=request.remote_user or "stackyard",
        REMOTE_ADDR=request.remote_addr,
        STACKYARD_HOOK_URL=hook_url,
        STACKYARD_HOOK_TOKEN=hook_token,
    )
    optional = {
        "CONTENT_TYPE": request.content_type,
        "CONTENT_LENGTH": request.content_length,
        "HTTP_CONTENT_ENCODING": request.content_encoding,
        "HTTP_GIT_PROTOCOL": request.git_protocol,
    }
    env.update({name: value for name, value in optional.items() if value})
    return env


def parse_cgi_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The status and headers of a CGI answer (the part before the blank line)."""
    status = 200
    headers = []
    for raw in head.decode("latin-1").splitlines():
        name, _, value = raw.partition(":")
        if not name.strip():
            continue
        if name.strip().lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((name.strip(), value.strip()))
    return status, headers
