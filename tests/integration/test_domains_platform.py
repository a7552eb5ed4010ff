"""A platform with a base domain and an ACME CA (real Pebble and its DNS mock): a stage is
served on https://<stage>.<stack>.<domain> with a certificate, `stackyard domains` shows
it, a name added by hand gets its own, a name that cannot be validated is told once to a
webhook (`certificate`), and a rolling deployment over HTTPS under wrk fails no request.
The platform publishes its API on stackyard.<domain> (``--public-api``): the API, its
auth, the git remote and the webhook URLs over HTTPS there.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..receivers import HttpReceiver
from ..router_contract import free_port
from .conftest import STACKYARD, RunningPlatform, start_platform, stop_platform
from .gitrepo import GitRepo
from .pebble import Pebble
from .test_router_tls import http_get, https_get, https_request
from .wrk import Load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

EAB_KID = "kid-stackyard"
EAB_HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"  # base64url

STAGES = """\
stages:
  - name: dev
    replicas: 2
    health: {path: /healthz, interval: 0.5, timeout: 1, retries: 2, start_period: 2}
    deploy: {drain_seconds: 1, stop_timeout: 3}
"""


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    directory = tmp_path_factory.mktemp("pebble")
    # The CA asks for an External Account Binding: the platform's certificates prove that
    # `up --acme-eab-kid/--acme-eab-hmac` reach Caddy's issuer.
    eab = {EAB_KID: EAB_HMAC}
    running = Pebble(directory, http_port=free_port(), tls_port=free_port(), eab=eab).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory, pebble: Pebble) -> Iterator[RunningPlatform]:
    options = (
        "--domain", "apps.test", "--acme-email", "ops@example.com",
        "--acme-ca", pebble.directory_url, "--acme-ca-roots", str(pebble.cert),
        "--http-port", str(pebble.http_port), "--https-port", str(pebble.tls_port),
        "--public-api", "stackyard",
        "--certificate-check-interval", "0.5", "--acme-eab-kid", EAB_KID,
    )  # fmt: skip
    data = tmp_path_factory.mktemp("domains") / "data"
    running = start_platform(data, {"STACKYARD_ACME_EAB_HMAC": EAB_HMAC}, up_args=options)
    try:
        yield running
    finally:
        stop_platform(running)


def domains(yard: RunningPlatform, stack: str) -> dict[str, dict[str, Any]]:
    found = json.loads(yard.cli("domains", stack, "--json").stdout)
    return {row["name"]: row for row in found["domains"]}


def wait_valid(yard: RunningPlatform, stack: str, name: str, within: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        row = domains(yard, stack).get(name)
        if row is not None and row["state"] not in ("pending",):
            return row
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: still {row} after {within} s")
        time.sleep(0.5)


def traffic(yard: RunningPlatform, stack: str) -> dict[int, tuple[int, int, int]]:
    """Requests, 5xx and 4xx answers of the stage dev's last hour, per release (from the
    traffic store, which counts the access logs before it answers)."""
    found = json.loads(yard.cli("traffic", stack, "--stage", "dev", "--json").stdout)
    [stage] = found["stages"]
    totals: dict[int, tuple[int, int, int]] = {}
    for row in stage["minutes"]:
        requests, errors, missing = totals.get(row["release"], (0, 0, 0))
        totals[row["release"]] = (
            requests + row["requests"],
            errors + row["errors"],
            missing + row["status_4xx"],
        )
    return totals


def wait_converged(yard: RunningPlatform, stack: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = json.loads(yard.cli("check", stack, "--stage", "dev", "--json").stdout)
        if state["converged"]:
            return
        time.sleep(0.5)
    pytest.fail(f"{stack} did not converge within {within} s")


def doctor_certificates(yard: RunningPlatform) -> tuple[int, dict[str, Any]]:
    result = yard.cli("doctor", "--json", check=False, timeout=120)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    return result.returncode, checks["certificates"]


def version(port: int, name: str, roots: Path) -> str:
    text = https_get(port, name, roots).text
    match = re.search(r"VERSION=(\w+)", text)
    return match.group(1) if match else text


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    running = HttpReceiver().start()
    try:
        yield running
    finally:
        running.stop()


def certificate_notices(receiver: HttpReceiver) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.received if r.json()["event"] == "certificate"]


def test_a_stage_on_the_base_domain_is_served_over_https_and_names_can_be_added(
    yard: RunningPlatform, pebble: Pebble, receiver: HttpReceiver, tmp_path: Path
) -> None:
    repo = GitRepo.from_example("hello", tmp_path / "hello")
    repo.write("stackyard.yml", STAGES)
    repo.commit("two replicas, fast health checks")
    yard.cli("stacks", "create", "hello", "--repo", str(repo.path))
    hook = receiver.url("/hook")
    yard.cli("notify", "add", "hello", "--webhook", hook, "--events", "certificate")
    yard.cli("build", "hello", timeout=300)
    yard.cli("release", "hello", "--stage", "dev")
    yard.cli("deploy", "hello", "--stage", "dev", timeout=300)

    name = "dev.hello.apps.test"
    url = json.loads(yard.cli("url", "hello", "--stage", "dev", "--json").stdout)["url"]
    assert url == f"https://{name}:{pebble.tls_port}"
    row = wait_valid(yard, "hello", name)
    assert row["state"] == "valid", row
    assert row["issuer"].startswith("Pebble Intermediate CA")
    assert row["description"].startswith("valid (expires ")
    roots = pebble.roots()
    assert version(pebble.tls_port, name, roots) == "v1"
    assert http_get(pebble.http_port, name, "/x").status_code == 308
    table = yard.cli("domains", "hello").stdout
    assert name in table
    assert "valid (expires" in table

    # A name added by hand: served with its own certificate, the first name unharmed.
    yard.cli("domains", "add", "hello", "--stage", "dev", "www.hello.test")
    added = wait_valid(yard, "hello", "www.hello.test")
    assert (added["state"], added["added"]) == ("valid", True)
    assert version(pebble.tls_port, "www.hello.test", roots) == "v1"
    refused = yard.cli("domains", "remove", "hello", "--stage", "dev", name, check=False)
    assert refused.returncode != 0
    assert "comes from stackyard.yml" in refused.stderr

    # A name that cannot be validated (its DNS sends Pebble to 127.0.0.2, where nothing
    # answers) is told once, with the stage and the CA's answer; the valid names never.
    pebble.point("broken.hello.test", "127.0.0.2")
    yard.cli("domains", "add", "hello", "--stage", "dev", "broken.hello.test")
    broken = wait_valid(yard, "hello", "broken.hello.test")
    assert broken["state"] == "failed", broken
    deadline = time.monotonic() + 30
    while not certificate_notices(receiver) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # several more looks at the certificates (every 0.5 s): nothing new
    [told] = certificate_notices(receiver)
    assert (told["stack"], told["stage"]) == ("hello", "dev")
    assert told["fields"]["Domain"] == "broken.hello.test"
    assert told["text"].startswith(f"failed: {broken['error']}")
    assert "127.0.0.2" in told["text"]
    yard.cli("domains", "remove", "hello", "--stage", "dev", "broken.hello.test")

    # A rolling deployment over HTTPS under load fails no request (upstreams move over
    # SRV records: no Caddy reload).
    repo.set_version("v2")
    yard.cli("build", "hello", timeout=300)
    yard.cli("release", "hello", "--stage", "dev")
    with Load(f"https://{name}:{pebble.tls_port}/", 120, pin=tmp_path) as load:
        time.sleep(1)
        yard.cli("deploy", "hello", "--stage", "dev", timeout=300)
        time.sleep(1)
        result = load.stop()
    assert result.requests > 50, result.raw
    assert result.errors == 0, result.raw
    assert version(pebble.tls_port, name, roots) == "v2"

    # The access log: a known batch, each request once, a secret in a query string masked.
    secret = "tok-5d1e9a7c0b"
    subprocess.run(
        [*STACKYARD, "secrets", "set", "hello", "API_TOKEN"],
        input=secret, env=yard.env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    wait_converged(yard, "hello")
    before = traffic(yard, "hello")
    batch = [f"/batch/{n}?token={secret}" for n in range(5)]
    for path in batch:
        assert https_get(pebble.tls_port, name, roots, path).status_code == 404  # busybox
    time.sleep(0.5)
    # Traffic by release: exactly the batch more, no 5xx, all for the release that serves.
    serving = json.loads(yard.cli("check", "hello", "--stage", "dev", "--json").stdout)["release"]
    after = traffic(yard, "hello")
    grown = {key: after.get(key, (0, 0, 0))[0] - before.get(key, (0, 0, 0))[0] for key in after}
    assert {key: n for key, n in grown.items() if n} == {serving: 5}, (before, after)
    assert after[serving][1] == before.get(serving, (0, 0, 0))[1]
    assert after[serving][2] - before.get(serving, (0, 0, 0))[2] == 5  # busybox's 404s
    assert "REQUESTS" in yard.cli("traffic", "hello", "--stage", "dev").stdout
    lines = yard.cli("logs", "hello", "--stage", "dev", "--access", "--tail", "1000").stdout
    assert secret not in lines
    for n in range(5):
        found = [line for line in lines.splitlines() if f"/batch/{n}?token=" in line]
        assert len(found) == 1, lines[-2000:]
        assert f"GET {name}/batch/{n}?token=" in found[0]
        assert " 404 " in found[0]

    # doctor reads every name's certificate as `domains` does (the public API's name too):
    # a name the CA cannot validate fails the check, named with its stage and the CA's error.
    assert doctor_certificates(yard)[1] == {
        "check": "certificates",
        "verdict": "ok",
        "summary": "3 valid",
        "fix": "",
    }
    pebble.point("broken.hello.test", "127.0.0.2")  # nothing answers the challenge there
    yard.cli("domains", "add", "hello", "--stage", "dev", "broken.hello.test")
    assert wait_valid(yard, "hello", "broken.hello.test")["state"] == "failed"
    code, found = doctor_certificates(yard)
    assert (code, found["verdict"]) == (1, "fail"), found
    assert found["summary"].startswith("broken.hello.test (hello/dev) failed: "), found
    assert "127.0.0.2" in found["summary"]
    assert "stackyard domains hello" in found["fix"]
    yard.cli("domains", "remove", "hello", "--stage", "dev", "broken.hello.test")

    yard.cli("domains", "remove", "hello", "--stage", "dev", "www.hello.test")
    deadline = time.monotonic() + 30
    while "www.hello.test" in domains(yard, "hello") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "www.hello.test" not in domains(yard, "hello")
    # The broken name was added twice (above, and for doctor): told at most once each time
    # (the second time only if a look came before doctor's check removed it); the valid
    # names never.
    told_names = [n["fields"]["Domain"] for n in certificate_notices(receiver)]
    assert told_names in (["broken.hello.test"], ["broken.hello.test"] * 2), told_names


def test_the_eab_hmac_key_is_sealed_and_shown_nowhere(yard: RunningPlatform) -> None:
    """The certificates above needed the binding; its HMAC key is in no file of the
    platform's own, no command line or environment of the control plane, no log."""
    sealed = yard.data_dir / "acme-eab-hmac.sealed"
    assert sealed.stat().st_mode & 0o777 == 0o600
    own = [sealed, yard.data_dir / "platform.json", *yard.data_dir.glob("logs/**/*.log")]
    for path in own:
        assert EAB_HMAC not in path.read_text(errors="replace"), path
    for part in ("cmdline", "environ"):
        assert EAB_HMAC.encode() not in Path(f"/proc/{yard.pid}/{part}").read_bytes(), part
    status = yard.cli("status", "--json").stdout
    assert EAB_HMAC not in status


def test_doctor_fails_naming_the_public_api_when_its_certificate_cannot_be_obtained(
    pebble: Pebble, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second platform whose public API name the CA cannot validate (its DNS sends Pebble
    to 127.0.0.2): doctor fails the certificates check, naming the name as the public API's
    and `up --public-api` as where it comes from."""
    pebble.point("stackyard.unreachable.test", "127.0.0.2")
    options = (
        "--domain", "unreachable.test", "--acme-email", "ops@example.com",
        "--acme-ca", pebble.directory_url, "--acme-ca-roots", str(pebble.cert),
        "--http-port", str(free_port()), "--https-port", str(free_port()),
        "--public-api", "stackyard", "--acme-eab-kid", EAB_KID,
    )  # fmt: skip
    data = tmp_path_factory.mktemp("unreachable") / "data"
    other = start_platform(data, {"STACKYARD_ACME_EAB_HMAC": EAB_HMAC}, up_args=options)
    try:
        deadline = time.monotonic() + 60
        code, found = doctor_certificates(other)
        while found["verdict"] != "fail" and time.monotonic() < deadline:
            time.sleep(0.5)  # pending while Pebble tries the challenge
            code, found = doctor_certificates(other)
        assert (code, found["verdict"]) == (1, "fail"), found
        summary = found["summary"]
        assert summary.startswith("stackyard.unreachable.test (the public API) failed: "), found
        assert "127.0.0.2" in summary
        assert "up --public-api" in found["fix"]
    finally:
        stop_platform(other)


# After the others: its attack locks 127.0.0.1 out of the API for a minute.
def test_the_api_is_published_over_https_on_its_name_with_its_auth(
    yard: RunningPlatform, pebble: Pebble, tmp_path: Path
) -> None:
    name, port, roots = "stackyard.apps.test", pebble.tls_port, pebble.roots()
    # The certificate is obtained when `up` publishes the route, by one Caddy, and loaded by
    # the other from the shared storage: wait for a run of answers, new connections each
    # (the kernel spreads them over both Caddies).
    answered, deadline = 0, time.monotonic() + 60
    while answered < 10:
        try:
            health = https_get(port, name, roots, "/healthz")
            answered += 1
        except httpx.HTTPError:
            answered = 0
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert http_get(pebble.http_port, name, "/healthz").status_code == 308

    refused = https_get(port, name, roots, "/api/v1/stacks")
    assert refused.status_code == 401, refused.text
    wrong = https_request(port, name, roots, "/api/v1/stacks", token="not-the-token")
    assert wrong.status_code == 401, wrong.text
    status = https_request(port, name, roots, "/api/v1/status", token=yard.token)
    assert status.status_code == 200, status.text
    assert status.json()["public_url"] == f"https://{name}:{port}"
    assert status.json()["api_url"].startswith("http://127.0.0.1:")  # still loopback only

    repo = GitRepo.from_example("static-site", tmp_path / "site")
    yard.cli("stacks", "create", "site", "--repo", str(repo.path))
    remote = yard.cli("remote", "site").stdout.strip()
    assert re.fullmatch(rf"https://stackyard:[^@]+@{re.escape(name)}:{port}/git/site\.git", remote)
    hooks = json.loads(yard.cli("webhook", "site", "--json").stdout)
    assert hooks["github_url"] == f"https://{name}:{port}/api/v1/hooks/github/site"
    assert f"https://{name}:{port}/api/v1/hooks/gitlab/site" in yard.cli("webhook", "site").stdout

    # A push over the public URL, trusting Pebble's roots only (to a branch that starts no run).
    resolve = f"http.curloptResolve={name}:{port}:127.0.0.1"
    push = subprocess.run(
        ["git", "-c", resolve, "push", "-q", remote, "HEAD:refs/heads/side"],
        cwd=repo.path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "GIT_SSL_CAINFO": str(roots), "GIT_TERMINAL_PROMPT": "0",
             "NO_PROXY": "*", "no_proxy": "*"},
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    bare = yard.data_dir / "remotes" / "site.git"
    pushed = subprocess.run(["git", "-C", str(bare), "rev-parse", "refs/heads/side"],
                            capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert pushed.stdout.strip() == repo.head()

    # The console's login over the public name: its session cookie is HTTPS-only there.
    context = ssl.create_default_context(cafile=str(roots))
    with httpx.Client(verify=context, timeout=10, trust_env=False) as client:
        login = client.post(f"https://127.0.0.1:{port}/ui/login", data={"token": yard.token},
                            headers={"Host": name}, extensions={"sni_hostname": name})  # fmt: skip
    assert login.status_code == 303, login.text
    cookie = login.headers["set-cookie"].lower()
    assert "secure" in cookie.split("; ")
    assert "httponly" in cookie.split("; ")

    # The attack: wrong tokens through the public name, each claiming another client
    # address in X-Forwarded-For. Caddy replaces what the client claims with the address
    # it sees, so the failures add up on one address and it is locked out (429).
    statuses = [
        https_request(port, name, roots, "/api/v1/stacks", token=f"wrong-{n}",
                      headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(6)
    ]  # fmt: skip
    assert set(statuses) <= {401, 429}, statuses
    assert statuses[-1] == 429, statuses
