"""DockerEngine passes the Engine contract against the real engine and registry, and more.

Test images are built FROM busybox, pushed to a real registry with auth, and removed
locally, so every start() pulls by digest with the login. Traffic goes to 127.0.0.1 only.
"""
# ruff: noqa: F811 - pytest fixtures imported from registry_fixtures are used as arguments

from __future__ import annotations

import gc
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from stackyard.deploy.keys import StageKey
from stackyard.deploy.targetengines import LOCAL, TargetEngines
from stackyard.deploy.taskwatch import TaskWatch
from stackyard.engines.base import (
    LABEL_PLATFORM,
    Engine,
    EngineError,
    EngineUnreachable,
    Health,
    TaskEventKind,
    TaskSpec,
    TaskState,
)
from stackyard.engines.docker import DockerEngine
from stackyard.engines.swarm import SwarmEngine
from stackyard.errors import ComponentError
from stackyard.images.registry import RegistryClient
from stackyard.plugins import load
from stackyard.registry_login import RegistryLogin
from tests.engine_contract import (
    RUN,
    Collector,
    ContractImages,
    EngineContract,
    SpecFactory,
    make_task_spec,
    wait_for,
)
from tests.integration.mute import (
    EMPTY_LISTINGS,
    closed_endpoint,
    mute_endpoint,
    ping_only_endpoint,
)
from tests.integration.registry_fixtures import (  # noqa: F401
    LiveRegistry,
    live_registry,
    running_registry,
)

pytestmark = pytest.mark.integration

SERVE = (
    'CMD ["sh", "-c", "echo started on $PORT; exec httpd -f -p ${HOST:-127.0.0.1}:$PORT -h /www"]'
)
DOCKERFILES = {
    "serving": f"FROM busybox:latest\nRUN mkdir -p /www && echo hello > /www/index.html\n{SERVE}\n",
    "crashing": 'FROM busybox:latest\nCMD ["sh", "-c", "echo boom; exit 3"]\n',
    # An app that says one line, nothing for 3 s, then another, and stays up.
    "quiet": (
        'FROM busybox:latest\nCMD ["sh", "-c", "echo first; sleep 3; echo second; '
        'exec sleep 600"]\n'
    ),
    # An app that does not run as root, as well-made images do.
    "nobody": (
        "FROM busybox:latest\nRUN mkdir -p /www && echo hello > /www/index.html\n"
        f"USER nobody\n{SERVE}\n"
    ),
    "healthy": (
        "FROM busybox:latest\nRUN mkdir -p /www && echo hello > /www/index.html\n"
        "HEALTHCHECK --interval=1s --timeout=1s --retries=2 "
        "CMD wget -q -O- http://127.0.0.1:$PORT/ || exit 1\n"
        f"{SERVE}\n"
    ),
    "unhealthy": (
        "FROM busybox:latest\nRUN mkdir -p /www\n"
        "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD echo sick on $PORT; exit 1\n"
        f"{SERVE}\n"
    ),
}
MISSING = "sha256:" + "0" * 64


@dataclass(frozen=True)
class BuiltImages:
    repository: str  # endpoint/repo
    digests: dict[str, str]  # name -> sha256:…
    login: RegistryLogin

    def ref(self, name: str) -> str:
        return f"{self.repository}@{self.digests[name]}"


def _remove_images(references: list[str]) -> None:
    client = docker.from_env()
    try:
        for reference in references:
            try:
                client.api.remove_image(reference, force=True)
            except docker.errors.ImageNotFound:
                continue
    finally:
        client.close()


@pytest.fixture(scope="module")
def test_images(live_registry: LiveRegistry) -> Iterator[BuiltImages]:
    repository = f"{live_registry.endpoint}/enginetest-{RUN}"
    tags = [f"{repository}:{name}" for name in DOCKERFILES]
    digests: dict[str, str] = {}
    try:
        with RegistryClient(
            live_registry.endpoint, username=live_registry.username, password=live_registry.password
        ) as registry:
            for name, dockerfile in DOCKERFILES.items():
                with tempfile.TemporaryDirectory() as context:
                    (Path(context) / "Dockerfile").write_text(dockerfile)
                    tag = f"{repository}:{name}"
                    live_registry.docker("build", "--network", "host", "-q", "-t", tag, context)
                live_registry.docker("push", tag)
                digests[name] = registry.resolve(f"enginetest-{RUN}", name)
        _remove_images(tags)  # start() must pull by digest, with the login
        login = RegistryLogin(
            live_registry.endpoint, live_registry.username, live_registry.password
        )
        yield BuiltImages(repository, digests, login)
    finally:
        _remove_images(tags + [f"{repository}@{digest}" for digest in digests.values()])


@pytest.fixture
def docker_engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    try:
        yield engine
    finally:
        for task in engine.list({LABEL_PLATFORM: RUN}):
            engine.remove(task.id)
        engine.close()


@pytest.fixture
def raw() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


class TestDockerEngine(EngineContract):
    @pytest.fixture
    def engine(self, docker_engine: DockerEngine) -> DockerEngine:
        return docker_engine

    @pytest.fixture
    def images(self, test_images: BuiltImages) -> ContractImages:
        return ContractImages(
            serving=test_images.ref("serving"),
            crashing=test_images.ref("crashing"),
            login=test_images.login,
        )


@pytest.fixture
def spec_for(test_images: BuiltImages) -> SpecFactory:
    images = ContractImages(
        test_images.ref("serving"), test_images.ref("crashing"), test_images.login
    )

    def make(name: str = "serving", **overrides: Any) -> TaskSpec:
        return make_task_spec(images, image=test_images.ref(name), **overrides)

    return make


def test_registered_under_the_engines_entry_point() -> None:
    assert load("engine", "docker") is DockerEngine


def test_ping_answers(docker_engine: DockerEngine) -> None:
    docker_engine.ping()


def test_serves_http_on_loopback_with_port_and_host_set(
    docker_engine: DockerEngine, spec_for: SpecFactory, raw: docker.DockerClient
) -> None:
    spec = spec_for(env={"GREETING": "hi"})
    task = docker_engine.start(spec)
    response = get_until_it_answers(f"http://127.0.0.1:{spec.port}/")
    assert response.status_code == 200
    assert response.text == "hello\n"
    attrs = raw.api.inspect_container(task.id)
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert (env["PORT"], env["HOST"], env["GREETING"]) == (str(spec.port), "127.0.0.1", "hi")
    assert attrs["Config"]["Image"] == spec.image
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert attrs["HostConfig"]["Init"] is True
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")


def test_limits_are_applied(
    docker_engine: DockerEngine, spec_for: SpecFactory, raw: docker.DockerClient
) -> None:
    spec = spec_for(cpu=0.25, memory=64 * 1024 * 1024, stop_timeout=7)
    task = docker_engine.start(spec)
    attrs = raw.api.inspect_container(task.id)
    assert attrs["HostConfig"]["NanoCpus"] == 250_000_000
    assert attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert attrs["Config"]["StopTimeout"] == 7
    assert attrs["Config"]["StopSignal"] == "SIGTERM"


def test_init_makes_stop_fast(docker_engine: DockerEngine, spec_for: SpecFactory) -> None:
    spec = spec_for(stop_timeout=10)
    task = docker_engine.start(spec)
    get_until_it_answers(f"http://127.0.0.1:{spec.port}/")
    began = time.monotonic()
    docker_engine.stop(task.id, timeout=10)
    assert time.monotonic() - began < 3
    info = docker_engine.inspect(task.id)
    assert (info.state, info.exit_code) == (TaskState.EXITED, 143)  # SIGTERM, not SIGKILL


def test_a_followed_log_that_is_quiet_longer_than_the_change_timeout_is_not_cut(
    spec_for: SpecFactory,
) -> None:
    # A followed log's first answer comes within a change's timeout (1 s here), so a
    # target that hangs fails it soon; after that the stream is read with no timeout: a
    # task that says nothing for 3 s is still followed, its next line arrives.
    engine = DockerEngine(change_timeout=1)
    task = engine.start(spec_for("quiet", stop_timeout=1))
    try:
        began = time.monotonic()
        lines = []
        for line in engine.logs(task.id, follow=True):
            lines.append(line)
            if line == "second" or time.monotonic() - began > 30:
                break
        assert lines == ["first", "second"]
    finally:
        engine.remove(task.id)
        engine.close()


def test_files_are_written_before_start_with_mode_0600(
    docker_engine: DockerEngine, spec_for: SpecFactory, raw: docker.DockerClient
) -> None:
    spec = spec_for(files={"/run/stackyard/app/.env": "SECRET=s3cr3t\n", "/tmp/note": "n"})
    task = docker_engine.start(spec)
    container = raw.containers.get(task.id)
    code, output = container.exec_run(["cat", "/run/stackyard/app/.env"])
    assert (code, output) == (0, b"SECRET=s3cr3t\n")
    code, output = container.exec_run(["stat", "-c", "%a", "/run/stackyard/app/.env", "/tmp"])
    assert output.split() == [b"600", b"1777"]  # /tmp keeps its sticky bit


def test_files_belong_to_the_user_the_image_runs_as(
    docker_engine: DockerEngine, spec_for: SpecFactory, raw: docker.DockerClient
) -> None:
    spec = spec_for("nobody", files={"/run/stackyard/env": "SECRET=s3cr3t\n"})
    task = docker_engine.start(spec)
    container = raw.containers.get(task.id)
    code, output = container.exec_run(["cat", "/run/stackyard/env"])  # as the image's USER
    assert (code, output) == (0, b"SECRET=s3cr3t\n")
    code, output = container.exec_run(["stat", "-c", "%U %a", "/run/stackyard/env"])
    assert output.split() == [b"nobody", b"600"]


def test_image_healthcheck_goes_from_starting_to_healthy(
    docker_engine: DockerEngine, spec_for: SpecFactory
) -> None:
    task = docker_engine.start(spec_for("healthy"))
    assert task.health in (Health.STARTING, Health.HEALTHY)
    info = wait_for(lambda: docker_engine.inspect(task.id), lambda i: i.health is Health.HEALTHY)
    assert "hello" in info.health_output


def test_a_healthcheck_that_passes_is_a_health_event(
    docker_engine: DockerEngine, spec_for: SpecFactory
) -> None:
    with docker_engine.events({LABEL_PLATFORM: RUN}, window=60) as stream:
        seen = Collector(stream)
        task_id = docker_engine.start(spec_for("healthy")).id
        assert seen.wait(task_id, TaskEventKind.HEALTH), seen.events
    assert docker_engine.inspect(task_id).health is Health.HEALTHY
    # The health check's own exec runs are not events of the task.
    assert seen.of(task_id) == [
        TaskEventKind.CREATED,
        TaskEventKind.STARTED,
        TaskEventKind.HEALTH,
    ]


def test_failing_healthcheck_reports_unhealthy_with_its_output(
    docker_engine: DockerEngine, spec_for: SpecFactory
) -> None:
    spec = spec_for("unhealthy")
    task = docker_engine.start(spec)
    assert task.health is Health.STARTING
    info = wait_for(lambda: docker_engine.inspect(task.id), lambda i: i.health is Health.UNHEALTHY)
    assert info.health_output == f"sick on {spec.port}"
    assert info.running


def test_a_digest_missing_from_the_registry_is_a_clear_engine_error(
    docker_engine: DockerEngine, spec_for: SpecFactory, test_images: BuiltImages
) -> None:
    image = f"{test_images.repository}@{MISSING}"
    spec = replace(spec_for(), image=image)
    with pytest.raises(EngineError, match="missing from the registry") as caught:
        docker_engine.start(spec)
    assert image in str(caught.value)
    assert caught.value.hint is not None
    assert "deleted from the registry" in caught.value.hint


def test_a_pull_without_the_login_is_refused(
    docker_engine: DockerEngine, spec_for: SpecFactory, live_registry: LiveRegistry, tmp_path: Path
) -> None:
    # An image of its own, in no other test's tasks: once the engine has pulled an image
    # with the login, it may start it again by digest without asking the registry.
    tag = f"{live_registry.endpoint}/private-{RUN}:v1"
    (tmp_path / "Dockerfile").write_text(f"FROM busybox:latest\nRUN echo {RUN} > /id\n")
    live_registry.docker("build", "--network", "host", "-q", "-t", tag, str(tmp_path))
    pushed = live_registry.docker("push", tag)
    digest = re.findall(r"digest: (sha256:[0-9a-f]{64})", pushed)[-1]
    image = f"{tag.rpartition(':')[0]}@{digest}"
    _remove_images([tag, image])
    spec = replace(spec_for(login=None), image=image)
    with pytest.raises(EngineError, match=re.escape(tag.rpartition(":")[0])):
        docker_engine.start(spec)


def test_a_refused_create_leaves_no_container(
    docker_engine: DockerEngine, spec_for: SpecFactory
) -> None:
    spec = spec_for(memory=1024)  # below the engine's minimum
    with pytest.raises(EngineError, match=spec.name):
        docker_engine.start(spec)
    assert spec.name not in {t.name for t in docker_engine.list({LABEL_PLATFORM: RUN})}


# The SDK's unix-socket adapter does not close a socket whose connect() failed.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_an_unreachable_engine_is_a_component_error() -> None:
    engine = DockerEngine(base_url="unix:///nonexistent.sock")
    with pytest.raises(ComponentError, match=r"nonexistent\.sock did not answer") as caught:
        engine.ping()
    assert caught.value.hint is not None
    assert "DOCKER_HOST" in caught.value.hint
    assert caught.value.message.endswith("did not answer: [Errno 2] No such file or directory")
    # Where it asked is data too (targets check names the engine once by it).
    assert isinstance(caught.value, EngineUnreachable)
    assert caught.value.endpoint == "unix:///nonexistent.sock"
    with pytest.raises(EngineUnreachable, match="did not answer") as listed:
        engine.list({LABEL_PLATFORM: RUN})
    assert listed.value.endpoint == "unix:///nonexistent.sock"
    with pytest.raises(ComponentError, match="did not answer"):
        engine.events({LABEL_PLATFORM: RUN}, window=1)
    del caught, listed
    gc.collect()  # let the leaked sockets go while the warning is ignored


@pytest.mark.parametrize("plugin", ["docker", "swarm"])
def test_a_ping_at_an_address_that_accepts_and_never_answers_gives_up_at_its_timeout(
    plugin: str,
) -> None:
    # A deploy asks its target's engine first: a peer that takes the connection and says
    # nothing must not hold it for the client's long timeout (120 s for docker).
    with mute_endpoint() as endpoint:
        engine = load("engine", plugin)(endpoint=endpoint, ping_timeout=1)
        try:
            with pytest.raises(ComponentError, match="did not answer") as caught:
                engine.ping()
            assert endpoint.removeprefix("tcp://") in caught.value.message
            assert "read timeout=1" in caught.value.message  # its own timeout, not the client's
        finally:
            engine.close()
    refused = load("engine", plugin)(endpoint=closed_endpoint(), ping_timeout=1)
    with pytest.raises(ComponentError, match="did not answer"):
        refused.ping()
    refused.close()


@pytest.mark.parametrize(
    ("plugin", "call", "answered"),
    [
        ("docker", "GET /containers/json", ()),
        ("swarm", "GET /nodes", ()),
        ("swarm", "GET /tasks", ("nodes", "services")),  # fast on those, hangs on the tasks
    ],
)
def test_a_ping_gives_up_on_an_engine_that_answers_it_and_then_never_lists(
    plugin: str, call: str, answered: tuple[str, ...]
) -> None:
    # The deploy's check is the ping: a task watch's first listing (with the client's long
    # timeout) must not be the first call to meet an engine that hangs after its ping.
    answers = {end: EMPTY_LISTINGS[end] for end in answered}
    with ping_only_endpoint(answers=answers) as endpoint:
        engine = load("engine", plugin)(endpoint=endpoint, ping_timeout=1)
        try:
            with pytest.raises(ComponentError, match="did not answer") as caught:
                engine.ping()
            message = caught.value.message
            assert endpoint.removeprefix("tcp://") in message
            assert "read timeout=1" in message  # its own timeout, not the client's
            assert message.endswith(f"(in {call}, after it answered its ping)"), message
        finally:
            engine.close()


@pytest.mark.parametrize(
    ("plugin", "inspected", "stopped"),
    [
        ("docker", "GET /containers/{id}/json", "POST /containers/{id}/stop"),
        ("swarm", "GET /services/{id}", "GET /services/{id}"),
    ],
)
def test_an_inspect_and_a_stop_give_up_on_an_engine_that_never_answers_them_within_their_bound(
    plugin: str, inspected: str, stopped: str
) -> None:
    # A start's last look, the watch after an event and a stop ask one task: a target
    # whose engine answers its ping and then never answers must not hold the stage's loop
    # for the client's long timeout (120 s; 30 s here). An inspect waits the listing
    # timeout (1 s here); a stop the task's grace period (2 s) plus the listing timeout; a
    # docker start's look for the image the listing timeout.
    task_id = "0123456789abcdef" * 4
    short = task_id[:12]
    with ping_only_endpoint() as endpoint:
        engine = load("engine", plugin)(endpoint=endpoint, timeout=30, listing_timeout=1)
        try:
            with pytest.raises(ComponentError, match="did not answer") as caught:
                engine.inspect(task_id)
            message = caught.value.message
            assert endpoint.removeprefix("tcp://") in message
            assert "read timeout=1)" in message, message  # the listing's, not the client's
            assert message.endswith(f"(in {inspected.format(id=short)})"), message
            with pytest.raises(ComponentError, match="did not answer") as caught:
                engine.stop(task_id, 2)
            message = caught.value.message
            assert endpoint.removeprefix("tcp://") in message
            bound = 3 if plugin == "docker" else 1  # the grace period and the margin
            assert f"read timeout={bound})" in message, message
            assert message.endswith(f"(in {stopped.format(id=short)})"), message
            if plugin == "docker":  # a start's first call: is the image there already?
                image = f"127.0.0.1:9/app@sha256:{'0' * 64}"
                spec = make_task_spec(ContractImages(image, image))
                with pytest.raises(ComponentError, match="did not answer") as caught:
                    engine.start(spec)
                message = caught.value.message
                assert "read timeout=1)" in message, message
                assert message.endswith(f"(in GET /images/{image}/json)"), message
        finally:
            engine.close()


@pytest.mark.parametrize(
    ("plugin", "created", "removed", "logged"),
    [
        ("docker", "POST /containers/create", "DELETE /containers/{id}", "/containers/{id}/logs"),
        ("swarm", "POST /services/create", "DELETE /services/{id}", "/services/{id}/logs"),
    ],
)
def test_a_pull_a_create_a_remove_logs_and_events_give_up_on_an_engine_that_never_answers(
    plugin: str, created: str, removed: str, logged: str
) -> None:
    # The calls that waited the client's long timeout (120 s; 30 s here), or for ever (the
    # event stream: the SDK asks it without a timeout), on an engine that answers its ping
    # and then holds the call: each gives up within its own bound, naming the engine and
    # the call. A create and a remove within a change's timeout (1 s here); a pull after
    # its silence bound (2 s here) without a line of progress; logs read to their end
    # within a change's timeout; the event stream answers within a listing's timeout,
    # whatever its window (a task watch opens it on a deploy's way).
    task_id = "0123456789abcdef" * 4
    short = task_id[:12]
    image = f"127.0.0.1:9/app@sha256:{'0' * 64}"
    spec = make_task_spec(ContractImages(image, image), network_mode="host")
    # Answered: a swarm's lookup of the service it removes (then its DELETE hangs), and a
    # docker start's look for its image (there already: the pull then hangs).
    answers = {f"GET {task_id}": json.dumps({"ID": task_id, "Spec": {"Name": "x"}})}
    if plugin == "docker":
        answers["json"] = "{}"
    with ping_only_endpoint(answers=answers) as endpoint:
        engine = load("engine", plugin)(
            endpoint=endpoint, timeout=30, listing_timeout=1, change_timeout=1,
            **({"pull_silence": 2} if plugin == "docker" else {}),
        )  # fmt: skip
        where = endpoint.removeprefix("tcp://")

        def gives_up(call: str, bound: int, action: Callable[[], object]) -> None:
            started = time.monotonic()
            with pytest.raises(ComponentError, match="did not answer") as caught:
                action()
            message = caught.value.message
            assert where in message, message
            assert message.endswith(f"(in {call})"), message
            assert time.monotonic() - started < bound + 5, message

        try:
            if plugin == "docker":
                gives_up("POST /images/create, no progress for 2 s", 2, lambda: engine.start(spec))
                answers["images/create"] = json.dumps({"status": "Digest: pulled"})
            gives_up(created, 1, lambda: engine.start(spec))
            gives_up(removed.format(id=short), 1, lambda: engine.remove(task_id))
            gives_up(f"GET {logged.format(id=short)}", 1, lambda: list(engine.logs(task_id)))
            # Followed, too: its first answer within a change's timeout, not the client's.
            gives_up(
                f"GET {logged.format(id=short)}", 1, lambda: list(engine.logs(task_id, follow=True))
            )
            labels = {LABEL_PLATFORM: RUN}
            gives_up("GET /events", 1, lambda: engine.events(labels, window=60))
        finally:
            engine.close()


def get_until_it_answers(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_cached_image_still_starts_when_the_registry_is_down_and_says_so(
    docker_engine: DockerEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_registry(tmp_path) as registry:
        repository = f"{registry.endpoint}/cachetest-{RUN}"
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "Dockerfile").write_text(DOCKERFILES["serving"])
        registry.docker("build", "--network", "host", "-q", "-t", f"{repository}:v1",
                        str(tmp_path / "ctx"))  # fmt: skip
        pushed = registry.docker("push", f"{repository}:v1")
        digest = re.findall(r"digest: (sha256:[0-9a-f]{64})", pushed)[-1]
        login = RegistryLogin(registry.endpoint, registry.username, registry.password)
        image = f"{repository}@{digest}"
        images = ContractImages(serving=image, crashing=image, login=login)
        first = docker_engine.start(make_task_spec(images))  # pulled: now in the engine
        docker_engine.remove(first.id)
    try:
        again = docker_engine.start(make_task_spec(images))  # the registry is gone
        assert docker_engine.inspect(again.id).running
        assert "starting it from the engine's copy" in caplog.text
        assert registry.endpoint in caplog.text
    finally:
        _remove_images([f"{repository}:v1", image])


def _logged_listing_failure(caplog: pytest.LogCaptureFixture) -> bool:
    return any(
        m.startswith("cannot list target far's engine's tasks") and "(in GET /tasks)" in m
        for m in (r.getMessage() for r in list(caplog.records))
    )


def test_a_target_engine_that_hangs_later_fails_its_watch_tick_within_the_listing_timeout(
    docker_engine: DockerEngine, spec_for: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A swarm target's task watch lists every second. Its engine answers at first, then
    # hangs on GET /tasks: that tick fails within the listing timeout (1 s here; the
    # engine client's own is 120 s), the stage on the target is told so (naming the target
    # and the call) and the watch tries again; the platform's own engine's watch goes on
    # meanwhile (a task started there is seen).
    caplog.set_level(logging.WARNING, logger="stackyard.deploy.taskwatch")
    answers = dict(EMPTY_LISTINGS)
    with ping_only_endpoint(answers=answers) as endpoint:
        far = SwarmEngine(endpoint=endpoint, timeout=120, listing_timeout=1)

        def watch(target: str, engine: Engine) -> TaskWatch:
            return TaskWatch(engine, RUN, lambda key: None, name=f"task-watch-{target}",
                             where=f"target {target}'s engine", retry_limit=1.0)  # fmt: skip

        targets = TargetEngines(docker_engine, lambda target: far, watch)
        targets.start()
        try:
            targets.answering("far")  # its first listing answered
            del answers["tasks"]  # from now on GET /tasks never answers
            deadline = time.monotonic() + 60  # half the client's own timeout
            while targets.follow("far").problem() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            with pytest.raises(ComponentError) as caught:
                targets.answering("far")
            said = caught.value.message
            assert said.startswith(f"target far: the swarm manager at {endpoint}"), said
            assert "read timeout=1" in said  # the listing's own timeout, not the client's
            assert said.endswith("(in GET /tasks)"), said
            # The watch sets its problem, then logs it: wait for the line, bounded.
            deadline = time.monotonic() + 10
            while not _logged_listing_failure(caplog) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _logged_listing_failure(caplog), [r.getMessage() for r in caplog.records]
            spec = spec_for()
            started = docker_engine.start(spec)  # the platform's own engine, meanwhile
            key = StageKey.of(spec.labels)
            assert key is not None
            deadline = time.monotonic() + 30
            while started.id not in {t.id for t in targets.answering(LOCAL).tasks(key)}:
                assert time.monotonic() < deadline, "the local watch did not see the task"
                time.sleep(0.1)
            with pytest.raises(ComponentError, match=r"\(in GET /tasks\)"):
                targets.answering("far")  # still hanging, still said
        finally:
            targets.stop()
