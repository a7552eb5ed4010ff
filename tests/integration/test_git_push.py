"""A real ``git push`` and ``git clone`` over HTTP to the platform's git remote.

Most tests serve the real API app with uvicorn on 127.0.0.1, in this process, with a
recording `start_run` in place of the pipeline, so they can check exactly what a push
passes on. The last one pushes to a whole platform (`stackyard up`) and finds the run
through the API.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from stackyard.cli.triggers import remote_url
from tests.recording_runs import RecordingRuns, recording_api

from .conftest import RunningPlatform, free_port, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

TOKEN = "push-token-for-tests"


@dataclass
class Api:
    url: str
    data_dir: Path
    runs: RecordingRuns

    def remote(self, stack: str, token: str = TOKEN) -> str:
        return remote_url(self.url, token, stack)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp("gitapi") / "data"
    data_dir.mkdir()
    port = free_port()
    with recording_api(
        data_dir, TOKEN, {"hello": "/nonexistent/upstream.git"}, api_port=port
    ) as rec:
        server = uvicorn.Server(
            uvicorn.Config(
                rec.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        try:
            yield Api(rec.settings.api_url, data_dir, rec.runs)
        finally:
            server.should_exit = True
            thread.join(20)


def git(
    cwd: Path, *args: str, ok: bool = True, trace: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C.UTF-8")
    if trace:
        env.update(GIT_TRACE_CURL="1", GIT_TRACE_CURL_NO_DATA="1")
    result = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@stackyard.invalid", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo.from_example("static-site", tmp_path / "app")


def bare_head(api: Api, stack: str, branch: str) -> str:
    bare = api.data_dir / "remotes" / f"{stack}.git"
    return git(bare, "rev-parse", f"refs/heads/{branch}").stdout.strip()


def test_push_starts_a_run_and_says_how_to_follow_it(api: Api, repo: GitRepo) -> None:
    api.runs.calls.clear()
    url = api.remote("hello")
    repo.git("remote", "add", "stackyard", url)
    first = repo.head()

    pushed = git(repo.path, "push", "stackyard", "main")

    assert bare_head(api, "hello", "main") == first
    assert api.runs.calls == [
        {
            "stack": "hello",
            "trigger": "git push",
            "ref": "main",
            "commit": first,
            "before": None,
            "source_url": str(api.data_dir / "remotes" / "hello.git"),
            "changed_paths": None,
            "pushed_by": "admin",  # the bootstrap admin token's owner
        }
    ]
    assert (
        f"remote: Stackyard: pipeline run 1 started for {first[:7]} \N{EM DASH} follow it: "
        "stackyard runs hello --watch"
    ) in pushed.stderr

    repo.write("VERSION", "2\n")
    second = repo.commit("version 2")
    git(repo.path, "push", "stackyard", "main")
    assert api.runs.calls[-1]["commit"] == second
    assert api.runs.calls[-1]["before"] == first


def test_push_to_another_branch_starts_nothing(api: Api, repo: GitRepo) -> None:
    api.runs.calls.clear()
    repo.git("remote", "add", "stackyard", api.remote("hello"))
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("feature work")

    pushed = git(repo.path, "push", "stackyard", "feature")

    assert api.runs.calls == []
    assert "remote: Stackyard: nothing started: branch feature is not main" in pushed.stderr
    assert bare_head(api, "hello", "feature") == repo.head()


def test_big_push_is_streamed_chunked(api: Api, repo: GitRepo) -> None:
    # Over git's 1 MiB post buffer, the pack is sent chunked, with no Content-Length.
    api.runs.calls.clear()
    repo.write("blob.txt", os.urandom(1_500_000).hex())  # random: hardly compresses
    sha = repo.commit("a big commit")
    repo.git("remote", "add", "stackyard", api.remote("hello"))

    pushed = git(repo.path, "push", "--force", "stackyard", "HEAD:refs/heads/main", trace=True)

    assert "Transfer-Encoding: chunked" in pushed.stderr
    assert bare_head(api, "hello", "main") == sha
    assert api.runs.calls[-1]["commit"] == sha


def test_fetch_with_a_gzip_body(api: Api, repo: GitRepo, tmp_path: Path) -> None:
    # git gzips an upload-pack request over 1 KiB: 60 branches make 60 "want" lines.
    repo.git("remote", "add", "stackyard", api.remote("hello"))
    for index in range(60):
        repo.git("checkout", "-q", "-B", f"topic-{index}", "main")
        repo.write("topic.txt", f"{index}\n")
        repo.commit(f"topic {index}")
    git(repo.path, "push", "-q", "--force", "stackyard", "--all")

    cloned = git(tmp_path, "clone", "--mirror", api.remote("hello"), "mirror.git", trace=True)

    assert "Content-Encoding: gzip" in cloned.stderr
    mirror = tmp_path / "mirror.git"
    assert git(mirror, "rev-parse", "refs/heads/topic-59").stdout.strip() == repo.head()


def test_clone_from_the_remote(api: Api, repo: GitRepo, tmp_path: Path) -> None:
    repo.git("remote", "add", "stackyard", api.remote("hello"))
    git(repo.path, "push", "--force", "stackyard", "main")

    git(tmp_path, "clone", "-q", api.remote("hello"), "copy")

    assert git(tmp_path / "copy", "rev-parse", "HEAD").stdout.strip() == repo.head()


def test_bad_token_fails_readably(api: Api, repo: GitRepo) -> None:
    api.runs.calls.clear()
    repo.git("remote", "add", "stackyard", api.remote("hello", token="wrong"))

    pushed = git(repo.path, "push", "stackyard", "main", ok=False)

    assert pushed.returncode != 0
    assert "Authentication failed" in pushed.stderr
    assert "token unknown; get the remote URL with `stackyard remote hello`" in pushed.stderr
    assert api.runs.calls == []


def test_no_credentials_are_refused(api: Api) -> None:
    response = httpx.get(f"{api.url}/git/hello.git/info/refs?service=git-upload-pack")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="stackyard"'


def test_unknown_stack_fails_readably(api: Api, repo: GitRepo) -> None:
    repo.git("remote", "add", "stackyard", api.remote("nope"))

    pushed = git(repo.path, "push", "stackyard", "main", ok=False)

    assert pushed.returncode != 0
    assert (
        "remote: stackyard: no stack named 'nope'; create it with "
        "`stackyard stacks create nope --repo ...`"
    ) in pushed.stderr
    assert not (api.data_dir / "remotes" / "nope.git").exists()


# -- the whole platform -------------------------------------------------------------


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("pushyard") / "data")
    try:
        yield running
    finally:
        stop_platform(running)


def test_push_to_a_running_platform_records_a_run(yard: RunningPlatform, repo: GitRepo) -> None:
    yard.cli("stacks", "create", "pushed", "--repo", str(repo.path))
    url = yard.cli("remote", "pushed").stdout.strip()
    assert url.startswith("http://stackyard:sy_")
    assert url.endswith(yard.api_url.replace("http://", "@") + "/git/pushed.git")
    assert yard.token not in url  # a push token for this stack, never the admin token
    repo.git("remote", "add", "stackyard", url)

    pushed = git(repo.path, "push", "stackyard", "main")

    assert "remote: Stackyard: pipeline run 1 started for" in pushed.stderr, pushed.stderr
    runs = httpx.get(
        f"{yard.api_url}/api/v1/stacks/pushed/runs",
        headers={"Authorization": f"Bearer {yard.token}"},
    ).json()["runs"]
    assert [(run["number"], run["trigger"], run["commit_sha"]) for run in runs] == [
        (1, "git push", repo.head())
    ]
    assert runs[0]["pushed_by"] == "admin"  # the owner of the push token
    # Let the run build (and deploy what needs no approval) before the platform stops: a
    # build still running then tagged its image after the module's clean-up had listed
    # the platform's images, and the engine kept it (one `pushed` image per test run).
    watched = yard.cli("runs", "pushed", "--watch", timeout=300)
    assert "WAITING" in watched.stdout or "SUCCEEDED" in watched.stdout, watched.stdout
