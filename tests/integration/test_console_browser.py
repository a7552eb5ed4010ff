"""The web console in a real headless Chromium, against a real platform.

One platform and one stack serve the module: a pipeline run deploys dev and staging and
waits at prod's approval gate. The tests then log in, read the stage cells, follow a
deployment log live, approve prod in the page, set a secret, and check that a browser
without the session cookie gets nothing. Screenshots go to test-output/screenshots/; with
STACKYARD_UPDATE_SCREENSHOTS=1 the ones the docs show are copied to docs/images/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from .conftest import RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "screenshots"
DOC_IMAGES = ROOT / "docs" / "images"
STACK = "web"
SECRET = "pa55-WORD-the-page-never-shows"
HEALTH = "health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}"
STAGES = f"""\
stages:
  - name: dev
    {HEALTH}
    deploy: {{drain_seconds: 0.5, stop_timeout: 3}}
  - name: staging
    {HEALTH}
    deploy: {{drain_seconds: 0.5, stop_timeout: 3}}
  - name: prod
    promotion: approval
    {HEALTH}
    deploy: {{drain_seconds: 0.5, stop_timeout: 3}}
"""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform whose stack waits at prod's gate after its first run."""
    tmp = tmp_path_factory.mktemp("console")
    running = start_platform(tmp / "data")
    try:
        repo = GitRepo.from_example("hello", tmp / STACK)
        repo.write("stackyard.yml", STAGES)
        repo.commit("three stages, prod behind an approval")
        running.cli("stacks", "create", STACK, "--repo", str(repo.path))
        run = json.loads(running.cli("deploy", STACK, "--json", timeout=300).stdout)
        assert run["status"] == "WAITING", run
        yield running
    finally:
        stop_platform(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture
def context(browser: Browser, yard: RunningPlatform) -> Iterator[BrowserContext]:
    found = browser.new_context(base_url=yard.api_url, viewport={"width": 1360, "height": 900})
    found.set_default_timeout(20_000)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def page(context: BrowserContext, yard: RunningPlatform) -> Page:
    """A page logged in through the login form; confirm() dialogs are accepted."""
    found = context.new_page()
    found.on("dialog", lambda dialog: dialog.accept())
    found.goto("/ui/")
    expect(found).to_have_url(f"{yard.api_url}/ui/login?next=%2Fui%2F")
    found.fill("#token", yard.token)
    found.click("button[type=submit]")
    expect(found).to_have_url(f"{yard.api_url}/ui/")
    return found


def api(yard: RunningPlatform, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {yard.token}"}
    response = httpx.request(method, yard.api_url + path, headers=headers, timeout=60, **kwargs)
    assert response.status_code < 400, response.text
    return response.json()


def short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def screenshot(page: Page, name: str, *, docs: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = SHOTS / name
    page.screenshot(path=str(target), full_page=True)
    if docs and os.environ.get("STACKYARD_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(target, DOC_IMAGES / name)


def cell(page: Page, stage: str) -> Any:
    return page.locator(f'section[data-stack="{STACK}"] .cell[data-stage="{stage}"]')


def test_log_in_and_see_three_stages_with_their_digests(page: Page, yard: RunningPlatform) -> None:
    cells = page.locator(f'section[data-stack="{STACK}"] .cell')
    expect(cells).to_have_count(3)
    assert [c.get_attribute("data-stage") for c in cells.all()] == ["dev", "staging", "prod"]
    for stage in ("dev", "staging"):
        digest = api(yard, "GET", f"/api/v1/stacks/{STACK}/stages/{stage}/check")["digest"]
        expect(cell(page, stage).locator(".digest")).to_have_text(short(digest))
        expect(cell(page, stage).locator(".release")).to_have_text("#1")
        expect(cell(page, stage).locator(".health")).to_have_text("1/1 healthy")
        expect(cell(page, stage).locator(".badge")).to_have_text("COMPLETED")
    expect(cell(page, "prod")).to_contain_text("not deployed yet")


def test_follow_a_deployment_log_live(page: Page, yard: RunningPlatform) -> None:
    # A new config for dev (same image): a real rollout, with new tasks and health checks.
    change = api(
        yard,
        "PATCH",
        f"/api/v1/stacks/{STACK}/variables",
        params={"stage": "dev"},
        json={"set": {"GREETING": "hello from the console test"}},
    )
    number = change["redeployed"][0]["deployment"]
    page.goto(f"/ui/stacks/{STACK}/logs?kind=deployment&stage=dev&number={number}")
    # Note when each line arrives: a followed log grows while the deployment runs.
    page.evaluate(
        """() => {
            window.arrivals = [];
            const log = document.getElementById("log");
            new MutationObserver(() => window.arrivals.push(performance.now()))
                .observe(log, {childList: true});
        }"""
    )
    log_state = page.locator("#log-state")
    expect(log_state).to_have_text("finished", timeout=90_000)
    text = page.locator("#log").inner_text()
    assert f"deployment {number}:" in text, text
    assert "deployment COMPLETED" in text, text
    arrivals: list[float] = page.evaluate("window.arrivals")
    assert len(arrivals) >= 3, text
    assert arrivals[-1] - arrivals[0] > 500, arrivals  # lines came over seconds, not at once
    screenshot(page, "console-logs.png")


def test_approve_prod_in_the_console_and_watch_it_update(page: Page, yard: RunningPlatform) -> None:
    page.goto(f"/ui/stacks/{STACK}")
    approve = page.get_by_role("button", name="Approve prod")
    expect(approve).to_be_visible()
    approve.click()  # the confirm() dialog is accepted by the fixture
    expect(page.locator(".notice")).to_have_text("Approved prod for run 1.")
    assert page.url == f"{yard.api_url}/ui/stacks/{STACK}"  # the POST left the history
    run = page.locator('tr[data-run="1"]')
    expect(run.locator(".badge").first).to_have_text("SUCCEEDED", timeout=90_000)
    digest = api(yard, "GET", f"/api/v1/stacks/{STACK}/stages/prod/check")["digest"]
    staging = api(yard, "GET", f"/api/v1/stacks/{STACK}/stages/staging/check")["digest"]
    assert digest == staging  # one image, promoted
    prod = page.locator('.cell[data-stage="prod"]')
    expect(prod.locator(".digest")).to_have_text(short(digest))
    expect(prod.locator(".release")).to_have_text("#1")
    expect(prod.locator(".health")).to_have_text("1/1 healthy")
    screenshot(page, "console-stack.png", docs=True)
    page.goto("/ui/")
    expect(cell(page, "prod").locator(".digest")).to_have_text(short(digest))
    screenshot(page, "console-stacks.png", docs=True)


def test_each_stage_column_holds_its_release_list_at_every_width(page: Page) -> None:
    """Each release row (digest, commit, origin, age, "use") stays inside its stage's
    column: before, rows ran under the next stage and hid its "use" buttons; the
    columns now keep their width and the stage strip scrolls on a narrow screen."""
    page.goto(f"/ui/stacks/{STACK}")
    # dev has two releases by now (the variable change above): release 1 has its "use"
    expect(page.get_by_role("button", name="use").first).to_be_visible()
    for width in (1360, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate(
            """() => Array.from(document.querySelectorAll('.stages .column'))
                .map(column => column.scrollWidth - column.clientWidth)"""
        )
        assert overflow == [0, 0, 0], (width, overflow)
    page.set_viewport_size({"width": 1360, "height": 900})
    strip = "(s => s.scrollWidth - s.clientWidth)(document.querySelector('.stages'))"
    assert page.evaluate(strip) == 0  # three stages fit a laptop's width without scrolling


def test_a_secret_set_in_the_console_is_never_shown(page: Page, yard: RunningPlatform) -> None:
    page.goto(f"/ui/stacks/{STACK}/variables")
    form = page.locator('section[data-scope="stage:dev"] form.set').last
    form.locator('input[name="name"]').fill("DB_PASSWORD")
    form.locator('input[name="value"]').fill(SECRET)
    form.get_by_role("button", name="Set").click()
    expect(page.locator(".notice")).to_contain_text("Changed secret DB_PASSWORD (stage dev).")
    expect(page.locator(".notice")).to_contain_text("Redeployed dev")
    assert SECRET not in page.content()
    page.goto(f"/ui/stacks/{STACK}/variables")
    secrets = page.locator('section[data-scope="stage:dev"] table.secrets')
    expect(secrets).to_contain_text("DB_PASSWORD")
    expect(secrets).to_contain_text("version 1")
    for path in ("/ui/", f"/ui/stacks/{STACK}", f"/ui/stacks/{STACK}/variables"):
        page.goto(path)
        assert SECRET not in page.content(), path
    screenshot(page, "console-variables.png")


def test_an_admin_adds_checks_and_removes_a_target(
    page: Page, yard: RunningPlatform, tmp_path: Path
) -> None:
    """Issue 13: targets are managed in the console too (admins: the header links them)."""
    page.get_by_role("link", name="Targets").click()
    expect(page).to_have_url(f"{yard.api_url}/ui/targets")
    form = page.locator("form.add-target")
    form.locator('input[name="name"]').fill("eu")
    form.locator('select[name="engine"]').select_option("docker")
    form.locator('input[name="endpoint"]').fill(f"unix://{tmp_path}/no-engine.sock")
    form.locator('input[name="region"]').fill("eu-west")
    form.get_by_role("button", name="Add").click()
    expect(page.locator("p.notice")).to_contain_text("Added target eu: docker unix://")
    expect(page.locator('[data-checked="eu"]')).to_contain_text("cannot be used")
    expect(page.locator('tr[data-target="eu"]')).to_contain_text("eu-west")
    page.locator('tr[data-target="local"]').get_by_role("button", name="Check").click()
    expect(page.locator('[data-checked="local"]')).to_contain_text("every part answers")
    page.locator('tr[data-target="eu"]').get_by_role("button", name="Remove").click()
    expect(page.locator("p.notice")).to_have_text("Removed target eu.")
    expect(page.locator('tr[data-target="eu"]')).to_have_count(0)
    assert api(yard, "GET", "/api/v1/targets")["targets"][-1]["name"] == "local"


def test_a_browser_without_the_session_cookie_is_refused(
    browser: Browser, yard: RunningPlatform
) -> None:
    context = browser.new_context(base_url=yard.api_url)
    try:
        page = context.new_page()
        page.goto(f"/ui/stacks/{STACK}")
        assert page.url == f"{yard.api_url}/ui/login?next=%2Fui%2Fstacks%2F{STACK}"
        expect(page.locator("#token")).to_be_visible()
        statuses = page.evaluate(
            """async () => {
                const paths = ["/ui/fragments/stacks", "/ui/fragments/stacks/web",
                               "/api/v1/stacks"];
                const found = [];
                for (const path of paths) {
                    found.push((await fetch(path, {credentials: "same-origin"})).status);
                }
                return found;
            }"""
        )
        assert statuses == [401, 401, 401]
        screenshot(page, "console-login.png")
    finally:
        context.close()


def test_the_console_renders_quickly_enough(yard: RunningPlatform) -> None:
    """A smoke figure on the real server (the bench measures 50 stacks x 3 stages)."""
    with httpx.Client(base_url=yard.api_url, timeout=30, follow_redirects=True) as client:
        login = client.post("/ui/login", data={"token": yard.token})
        assert login.status_code == 200
        started = time.perf_counter()
        for _ in range(5):
            assert client.get(f"/ui/stacks/{STACK}").status_code == 200
        assert (time.perf_counter() - started) / 5 < 1.0


def test_the_domains_page_charts_the_traffic_of_a_stage(page: Page, yard: RunningPlatform) -> None:
    url = api(yard, "GET", f"/api/v1/stacks/{STACK}/stages/dev/url")["url"]
    with httpx.Client(timeout=10, trust_env=False) as client:
        for n in range(5):
            client.get(f"{url}/traffic/{n}")
    time.sleep(0.5)  # Caddy writes the access log after the answer
    report = api(yard, "GET", f"/api/v1/stacks/{STACK}/traffic", params={"stage": "dev"})
    total = sum(row["requests"] for row in report["stages"][0]["minutes"])
    assert total >= 5, report
    page.goto(f"/ui/stacks/{STACK}/domains")
    expect(page.locator("table.domains")).to_contain_text("no stage of web is served on a host")
    dev = page.locator('section.traffic[data-stage="dev"]')
    expect(dev.locator("svg.traffic-chart rect.requests").first).to_be_visible()
    shown = [int(text) for text in dev.locator("table.traffic td.requests").all_inner_texts()]
    assert sum(shown) == total, (shown, report)
    screenshot(page, "console-traffic.png")
