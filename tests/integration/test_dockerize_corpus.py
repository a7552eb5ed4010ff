"""The real-app corpus (tests/apps/corpus.toml) deploys without a Dockerfile and serves.

One platform for every app. Each app is fetched into the corpus cache (tests/apps/corpus.py),
committed to its own git repository as a user would push it, built by the platform with
the generated Dockerfile, released to one stage, and asked for its page through the router:
200 with the app's own text; for a single-page app, the script its page loads answers too.
Everything this module starts is stopped, and every image it made is removed, by id.

The builds are most of the module's time, and installing from the package registries is
most of a build (``npm ci`` alone took 104 of a Create React App's 131 s): the module starts
them ``BUILDS_AT_ONCE`` at a time, as several teams pushing to one platform would, and each
app's test waits for its own build (a platform builds different stacks at the same time).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from stackyard.images.dockerize import detect
from tests.apps.corpus import App, ensure, manifest

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

LOCK_DATE, APPS = manifest()
STAGE = """\
stages:
  - name: dev
    health: {{path: {path}, interval: 0.5, timeout: 5, retries: 3, start_period: 60}}
    deploy: {{drain_seconds: 0.2, stop_timeout: 5}}
"""
SCRIPT = re.compile(r"<script[^>]*\bsrc=\"([^\"]+\.js)\"")
STYLESHEET = re.compile(r"<link[^>]*\bhref=\"([^\"]+\.css)\"")
STEP_ID = re.compile(r"\]\s+---> ([0-9a-f]{12})$", re.MULTILINE)


BUILDS_AT_ONCE = 3
BUILD_TIMEOUT = 1200


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    started = time.time()
    running = start_platform(tmp_path_factory.mktemp("corpus") / "data")
    try:
        yield running
    finally:
        stop_platform(running, images_since=started)  # the stacks' images, by id
        remove_build_steps(running)


@pytest.fixture(scope="module")
def builds(
    yard: RunningPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Every app's stack, created from its repository, and its build (``stackyard build
    --json``), started in the background in the tests' order: app name -> the build."""
    repos = tmp_path_factory.mktemp("corpus-repos")
    with ThreadPoolExecutor(max_workers=BUILDS_AT_ONCE) as pool:
        started = {app.name: pool.submit(build, yard, repos, app) for app in APPS}
        try:
            yield started
        finally:
            for future in started.values():
                future.cancel()


def build(yard: RunningPlatform, repos: Path, app: App) -> subprocess.CompletedProcess[str]:
    repo = repository(app, repos)
    extra = ["--context", app.context] if app.context != "." else []
    yard.cli("stacks", "create", app.name, "--repo", str(repo.path), *extra)
    return yard.cli("build", app.name, "--json", check=False, timeout=BUILD_TIMEOUT)


def remove_build_steps(yard: RunningPlatform) -> None:
    """The build stages' images the builds left untagged, by their ids in the build logs:
    multi-stage builds leave one per stage."""
    steps: set[str] = set()
    for log in (yard.data_dir / "logs" / "builds").glob("*/*.log"):
        steps |= set(STEP_ID.findall(log.read_text(encoding="utf-8", errors="replace")))
    dangling = subprocess.run(
        ["docker", "images", "-q", "--filter", "dangling=true"],
        capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    ours = sorted(steps & set(dangling))
    if ours:
        subprocess.run(["docker", "rmi", *ours], capture_output=True, timeout=300)


def repository(app: App, tmp_path: Path) -> GitRepo:
    """The app as a user would push it: its files, a stackyard.yml, one commit."""
    source = ensure(app, LOCK_DATE)
    dest = tmp_path / app.name
    shutil.copytree(source, dest)
    repo = GitRepo(dest)
    repo.write("stackyard.yml", STAGE.format(path=app.path))
    repo.git("init", "-q", "-b", "main")
    repo.commit(f"{app.name}: as published")
    return repo


def deploy(yard: RunningPlatform, stack: str) -> None:
    """Release the build to dev and roll it out; fail with the deployment's reason if not."""
    yard.cli("release", stack, "--stage", "dev")
    result = yard.cli("deploy", stack, "--stage", "dev", "--json", check=False, timeout=300)
    record = json.loads(result.stdout) if result.stdout.strip() else {}
    if result.returncode != 0 or record.get("status") != "COMPLETED":
        pytest.fail(f"deployment of {stack} did not complete: {result.stderr}\n{record}")


def fetch(client: httpx.Client, url: str) -> httpx.Response:
    response = client.get(url)
    assert response.status_code == 200, f"GET {url}: {response.status_code}\n{response.text[:500]}"
    return response


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("app", APPS, ids=[app.name for app in APPS])
def test_corpus_app_deploys_and_serves(
    yard: RunningPlatform,
    builds: dict[str, Future[subprocess.CompletedProcess[str]]],
    app: App,
) -> None:
    context = ensure(app, LOCK_DATE) / app.context
    assert not (context / "Dockerfile").exists(), "the corpus holds apps without a Dockerfile"
    detection = detect(context)
    assert detection.kind == app.kind, detection.evidence
    if app.warns:
        assert any(app.warns in warning for warning in detection.warnings), detection.warnings
    # The builds before it may hold the pool: its own build's bound, plus theirs.
    result = builds[app.name].result(timeout=BUILD_TIMEOUT * len(APPS))
    record = json.loads(result.stdout) if result.stdout.strip() else {}
    if record.get("status") != "SUCCEEDED":
        log = Path(record["log_path"]).read_text()[-6000:] if record.get("log_path") else ""
        pytest.fail(f"build of {app.name} failed: {result.stderr}\n{log}")
    deploy(yard, app.name)
    base = json.loads(yard.cli("url", app.name, "--stage", "dev", "--json").stdout)["url"]
    with httpx.Client(trust_env=False, timeout=10) as client:
        page = fetch(client, base + app.path)
        assert app.expect in page.text, page.text[:2000]
        if app.spa:
            scripts = SCRIPT.findall(page.text)
            assert scripts, f"the page loads no script: {page.text[:2000]}"
            script = fetch(client, urljoin(base + app.path, scripts[0]))
            assert len(script.content) > 100, script.text
        if app.asset:
            sheets = [s for s in STYLESHEET.findall(page.text) if app.asset in s]
            assert sheets, f"the page links no stylesheet under {app.asset}"
            fetch(client, urljoin(base + app.path, sheets[0]))
    if app.imports:
        image = f"{yard.registry}/{app.name}@{record['digest']}"
        ran = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", image, "python", "-c",
             f"import {app.imports}"], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
