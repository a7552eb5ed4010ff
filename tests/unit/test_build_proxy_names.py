"""A build's local image names (TinyStacks' ``docker build -t builtimage .``) are its run's
own: held from its first write until the run ends, then removed from the engine, so the
next run of any stack may use the same name, and a run of another stack that wants it
meanwhile waits. The leases alone, then the proxy against a small engine of the test's own
on a unix socket (what it was asked, and its images by name)."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import re
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from stackyard.images.dockerproxy.leases import NameLeases, RunNames
from stackyard.images.dockerproxy.rules import BuildLimits, BuildScope
from stackyard.images.dockerproxy.server import BuildProxy
from stackyard.registry_login import RegistryLogin
from tests.unit.test_build_proxy_failure import UnixConnection

REGISTRY = "127.0.0.1:5999"
SOURCE = "sha256:" + "5e" * 32  # an image each stack pushed to its own repository

# -- the leases --------------------------------------------------------------------------------


def test_a_name_another_run_holds_is_had_once_that_run_ends() -> None:
    async def scenario() -> list[str]:
        leases = NameLeases(wait=30)
        first, second = RunNames(), RunNames()
        said: list[str] = []
        assert await leases.take(["builtimage:latest"], first, "tiny") == (
            {"builtimage:latest"},
            None,
        )

        async def second_run() -> None:
            taken, refusal = await leases.take(
                ["builtimage:latest"], second, "tiny2", on_wait=said.append
            )
            said.append(f"second holds {sorted(taken)}, refused: {refusal}")

        waiting = asyncio.create_task(second_run())
        await asyncio.sleep(0.05)
        assert second.waiting_for == "builtimage:latest"
        said.append("first ends")
        leases.end(first)
        await waiting
        assert leases.holder("builtimage:latest") is second
        assert second.waiting_for is None
        return said

    assert asyncio.run(scenario()) == [
        # Said once, when the wait starts (the build log's line), without the holder's stack.
        "Stackyard's build proxy: waiting for the local image name builtimage:latest: a build "
        "or release of another stack running now holds it (a local name is one run's own "
        "until that run ends); up to 30 s more. A name of your own ($STACK_NAME-<name>) "
        "never waits",
        "first ends",
        "second holds ['builtimage:latest'], refused: None",
    ]


def test_two_runs_waiting_for_each_other_s_name_refuse_the_second_at_once() -> None:
    async def scenario() -> str | None:
        leases = NameLeases(wait=30)
        first, second = RunNames(), RunNames()
        await leases.take(["a:latest"], first, "one")
        await leases.take(["b:latest"], second, "two")
        waiting = asyncio.create_task(leases.take(["b:latest"], first, "one"))
        await asyncio.sleep(0.05)
        taken, refusal = await asyncio.wait_for(leases.take(["a:latest"], second, "two"), 5)
        assert taken == set()
        leases.end(second)  # the second run fails; the first goes on
        assert await waiting == ({"b:latest"}, None)
        return refusal

    refusal = asyncio.run(scenario())
    assert refusal is not None
    assert "refused to write a:latest: a build or release of another stack" in refusal
    assert "waits for a local name this run holds" in refusal
    assert "$STACK_NAME-<name>" in refusal


def test_a_wait_longer_than_the_limit_is_refused_and_holds_nothing() -> None:
    async def scenario() -> tuple[set[str], str | None, RunNames | None]:
        leases = NameLeases(wait=0.1)
        first, second = RunNames(), RunNames()
        await leases.take(["b:latest"], first, "tiny")
        taken, refusal = await leases.take(["a:latest", "b:latest"], second, "tiny")
        return taken, refusal, leases.holder("a:latest")

    taken, refusal, holder = asyncio.run(scenario())
    assert (taken, holder) == (set(), None)  # a:latest, had first, is given back
    assert refusal is not None
    assert "b:latest: another build or release of tiny running now holds" in refusal
    assert "still after 0.1 s of waiting" in refusal


def test_a_run_that_ends_while_it_waits_stops_waiting() -> None:
    async def scenario() -> str | None:
        leases = NameLeases(wait=30)
        first, second = RunNames(), RunNames()
        await leases.take(["a:latest"], first, "one")
        waiting = asyncio.create_task(leases.take(["a:latest"], second, "two"))
        await asyncio.sleep(0.05)
        leases.end(second)
        _, refusal = await asyncio.wait_for(waiting, 5)
        return refusal

    assert "still after" in str(asyncio.run(scenario()))


def test_a_run_that_has_ended_is_refused_a_name_and_holds_none() -> None:
    """A request still in flight when its run's socket closed must not take a name that
    nobody would ever give back."""

    async def scenario() -> tuple[set[str], str | None, RunNames | None]:
        leases = NameLeases(wait=30)
        run = RunNames()
        leases.end(run)
        taken, refusal = await leases.take(["builtimage:latest"], run, "tiny")
        return taken, refusal, leases.holder("builtimage:latest")

    taken, refusal, holder = asyncio.run(scenario())
    assert taken == set()
    assert refusal is not None
    assert "builtimage:latest: this build or release has ended" in refusal
    assert holder is None


# -- the proxy ---------------------------------------------------------------------------------


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Image names and what it was asked: inspect, tag, delete."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.images: dict[str, str] = {}  # name:tag -> id
        self.asked: list[str] = []
        self.gate = threading.Event()  # a tag is answered once it is set (it is, at first)
        self.gate.set()
        for stack in ("tiny", "tiny2"):
            self.images[f"{REGISTRY}/{stack}:v1"] = SOURCE
        super().__init__(str(path), EngineHandler)

    def record(self, image_id: str) -> dict[str, object]:
        tags = sorted(name for name, found in self.images.items() if found == image_id)
        return {"Id": image_id, "RepoTags": tags, "RepoDigests": []}


class EngineHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Engine

    def address_string(self) -> str:
        return "engine"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = api(self.path)
        name = path.removeprefix("/images/").removesuffix("/json")
        name = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        image_id = self.server.images.get(name)
        if image_id is None:
            self.answer(404, {"message": f"No such image: {name}"})
        else:
            self.answer(200, self.server.record(image_id))

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        source = api(self.path).removeprefix("/images/").removesuffix("/tag")
        target = f"{query['repo'][0]}:{query.get('tag', ['latest'])[0]}"
        self.server.asked.append(f"tag {source} {target}")
        self.server.images[target] = self.server.images[source]
        self.server.gate.wait(30)  # done on the engine, the answer held back
        self.answer(201, {})

    def do_DELETE(self) -> None:
        parts = urlsplit(self.path)
        name = api(self.path).removeprefix("/images/")
        self.server.asked.append(f"delete {name}?{parts.query}")
        if self.server.images.pop(name, None) is None:
            self.answer(404, {"message": f"No such image: {name}"})
        else:
            self.answer(200, [{"Untagged": name}])

    def answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def api(target: str) -> str:
    """A request's path without its API version (the proxy passes on the client's)."""
    return re.sub(r"^/v[0-9.]+/", "/", unquote(urlsplit(target).path))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    served = Engine(tmp_path / "engine.sock")
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.shutdown()
        served.server_close()
        thread.join(timeout=10)


def scope(stack: str) -> BuildScope:
    login = RegistryLogin(REGISTRY, "u", "p")
    return BuildScope(stack, REGISTRY, login, BuildLimits(pids=64))


def tag(path: Path, source: str, repo: str) -> tuple[int, str]:
    """``docker tag SOURCE REPO`` through the proxy socket at ``path``."""
    connection = UnixConnection(path)
    try:
        connection.request("POST", f"/v1.41/images/{source}/tag?repo={repo}&tag=latest")
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}").get("message", "")
    finally:
        connection.close()


def test_a_run_s_local_names_are_removed_when_it_ends_and_another_stack_s_run_may_use_them(
    engine: Engine, tmp_path: Path
) -> None:
    names_file = tmp_path / "names.json"
    proxy = BuildProxy(str(tmp_path / "engine.sock"), names_file=names_file, scratch_names=True)
    try:
        first = proxy.open(scope("tiny"))
        assert tag(first.path, f"{REGISTRY}/tiny:v1", "builtimage") == (201, "")
        assert json.loads(names_file.read_text()) == {"builtimage:latest": "tiny"}
        first.close()
        assert engine.asked[-1] == "delete builtimage:latest?noprune=1"
        assert "builtimage:latest" not in engine.images
        assert engine.images[f"{REGISTRY}/tiny:v1"] == SOURCE  # the pushed name stays
        assert json.loads(names_file.read_text()) == {}

        second = proxy.open(scope("tiny2"))
        assert tag(second.path, f"{REGISTRY}/tiny2:v1", "builtimage") == (201, "")
        second.close()
        assert engine.asked.count("delete builtimage:latest?noprune=1") == 2
    finally:
        proxy.close()


def test_without_scratch_names_a_stack_s_names_stay_its_own_after_the_run(
    engine: Engine, tmp_path: Path
) -> None:
    """``stackyard buildspec run``: the developer's engine keeps what the run built."""
    proxy = BuildProxy(str(tmp_path / "engine.sock"))
    try:
        first = proxy.open(scope("tiny"))
        assert tag(first.path, f"{REGISTRY}/tiny:v1", "builtimage")[0] == 201
        first.close()
        assert "builtimage:latest" in engine.images
        assert not any(asked.startswith("delete") for asked in engine.asked)
        second = proxy.open(scope("tiny2"))
        status, message = tag(second.path, f"{REGISTRY}/tiny2:v1", "builtimage")
        second.close()
        assert (status, message) == (
            403,
            "Stackyard's build proxy refused to write builtimage:latest: it is another "
            "stack's image",
        )
    finally:
        proxy.close()


def test_another_stack_s_run_waits_for_a_name_a_running_build_holds(
    engine: Engine, tmp_path: Path
) -> None:
    """The second run's tag goes through once the first run ended and its name is gone:
    the name never reaches the first stack's image."""
    proxy = BuildProxy(str(tmp_path / "engine.sock"), scratch_names=True)
    try:
        first = proxy.open(scope("tiny"))
        second = proxy.open(scope("tiny2"))
        heard: list[str] = []
        second.notice = heard.append  # the command's build log, while it runs
        assert tag(first.path, f"{REGISTRY}/tiny:v1", "builtimage")[0] == 201
        result: list[tuple[int, str]] = []
        waiting = threading.Thread(
            target=lambda: result.append(tag(second.path, f"{REGISTRY}/tiny2:v1", "builtimage"))
        )
        waiting.start()
        deadline = time.monotonic() + 30
        while second.run_names.waiting_for is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not result  # still waiting
        assert len(heard) == 1
        assert "waiting for the local image name builtimage:latest" in heard[0]
        assert "tiny" not in heard[0]  # the holder's stack is not named to another stack
        first.close()
        waiting.join(timeout=30)
        assert result == [(201, "")]
        assert engine.asked == [
            f"tag {REGISTRY}/tiny:v1 builtimage:latest",
            "delete builtimage:latest?noprune=1",
            f"tag {REGISTRY}/tiny2:v1 builtimage:latest",
        ]
        second.close()
    finally:
        proxy.close()


def test_a_stopped_platform_s_names_are_removed_at_the_next_start(
    engine: Engine, tmp_path: Path
) -> None:
    """Names an earlier version kept for good, or a run cut short left: the next start
    removes them from the engine (one is gone already) and forgets them."""
    names_file = tmp_path / "names.json"
    engine.images["builtimage:latest"] = SOURCE
    names_file.write_text(json.dumps({"builtimage:latest": "tiny", "gone:latest": "tiny2"}))
    proxy = BuildProxy(str(tmp_path / "engine.sock"), names_file=names_file, scratch_names=True)
    try:
        assert sorted(proxy.untag_leftovers()) == ["builtimage:latest", "gone:latest"]
    finally:
        proxy.close()
    assert "builtimage:latest" not in engine.images
    assert json.loads(names_file.read_text()) == {}


def test_a_name_whose_tag_was_in_flight_when_the_run_ended_is_removed_not_recorded(
    engine: Engine, tmp_path: Path
) -> None:
    """The run's clean-up removes the names its requests made; a tag the engine answers
    only after that (the build container was killed mid-request) would outlive the run,
    its name the stack's for good: it is removed when its answer comes instead."""
    proxy = BuildProxy(str(tmp_path / "engine.sock"), scratch_names=True)
    try:
        first = proxy.open(scope("tiny"))
        engine.gate.clear()
        late: list[tuple[int, str]] = []
        tagging = threading.Thread(
            target=lambda: late.append(tag(first.path, f"{REGISTRY}/tiny:v1", "builtimage"))
        )
        tagging.start()
        deadline = time.monotonic() + 30
        while "builtimage:latest" not in engine.images and time.monotonic() < deadline:
            time.sleep(0.02)
        first.close()  # the run ends while the engine still holds the tag's answer
        engine.gate.set()
        tagging.join(timeout=30)
        deadline = time.monotonic() + 30
        while "builtimage:latest" in engine.images and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "builtimage:latest" not in engine.images
        assert engine.asked[-1] == "delete builtimage:latest?noprune=1"
        assert "builtimage:latest" not in proxy.names.owners
        second = proxy.open(scope("tiny2"))  # another stack's run may use the name at once
        assert tag(second.path, f"{REGISTRY}/tiny2:v1", "builtimage") == (201, "")
        second.close()
    finally:
        proxy.close()
