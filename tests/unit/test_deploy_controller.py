"""The deployment controller's executor, one tick at a time, against FakeEngine and FakeRouter.

The store is a real SQLite database; health comes from the fake's scripted HEALTHCHECK state
(``health.type: docker``) and drains take 0 s, so no test sleeps. The planner's decisions have
their own tests (test_deploy_plan.py); these check that the executor carries them out.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from stackyard import changes
from stackyard.config.models import StackConfig
from stackyard.deploy.service import DeployService
from stackyard.engines.base import (
    LABEL_DEPLOYMENT,
    LABEL_PLATFORM,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_STACK,
    LABEL_STAGE,
    EngineError,
    Health,
    TaskInfo,
    TaskSpec,
)
from stackyard.engines.fake import FakeEngine
from stackyard.errors import ComponentError, PermanentError, StackyardError
from stackyard.images.imagestore import Placement, TargetPlace, only_local
from stackyard.pipeline.releases import config_snapshot
from stackyard.registry_login import RegistryLogin
from stackyard.router.base import Route
from stackyard.router.fake import FakeRouter
from stackyard.settings import Settings
from stackyard.store.models import Stack, StageRoute
from tests.unit.controller_fixtures import (
    KEY,
    PLATFORM,
    REGISTRY,
    ROUTE_NAME,
    STACK,
    STAGE,
    V1,
    V2,
    RollbackCall,
    Yard,
    make_yard,
)


@pytest.fixture
def yard(tmp_path: Path) -> Iterator[Yard]:
    yield from make_yard(tmp_path)


def addresses(yard: Yard, task_ids: list[str]) -> set[str]:
    return {f"127.0.0.1:{yard.engine.inspect(i).port}" for i in task_ids}


# -- deployments that succeed


def test_first_deployment_starts_a_pinned_task_and_routes_it_once_healthy(yard: Yard) -> None:
    yard.engine.behave(V1, healthy=True, health_after=5)
    number = yard.deploy(yard.release(V1, variables={"GREETING": "hi", "MODE": "test"}))

    yard.tick()
    (spec,) = yard.started()
    assert spec.image == f"{REGISTRY}/{STACK}@{V1}"
    assert spec.labels == {
        LABEL_PLATFORM: PLATFORM,
        LABEL_STACK: STACK,
        LABEL_STAGE: STAGE,
        LABEL_RELEASE: "1",
        LABEL_DEPLOYMENT: str(number),
        LABEL_PORT: str(spec.port),
    }
    hosts = "127.0.0.1,localhost"  # the platform allows the stage's host names
    assert spec.env == {
        "GREETING": "hi",
        "MODE": "test",
        "ALLOWED_HOSTS": hosts,
        "DJANGO_ALLOWED_HOSTS": hosts,
    }
    assert spec.stop_timeout == 1
    assert spec.login == RegistryLogin(REGISTRY, "stackyard", "registry-password")
    assert yard.upstreams() == []  # the route exists, but serves nothing yet
    assert yard.status(number) == "IN_PROGRESS"

    yard.tick(3)  # still STARTING: no traffic, no second task
    assert yard.upstreams() == []
    assert yard.status(number) == "IN_PROGRESS"

    yard.clock.advance(5)  # the fake's HEALTHCHECK passes
    yard.run_until(lambda: yard.status(number) == "COMPLETED", limit=3)
    assert yard.upstreams() == [f"127.0.0.1:{spec.port}"]
    row = yard.deployment(number)
    counters = (row.tasks_started, row.tasks_healthy, row.tasks_routed, row.tasks_stopped)
    assert counters == (1, 1, 1, 0)
    assert row.failures == 0
    assert row.started_at is not None
    assert row.finished_at is not None
    assert len(yard.started()) == 1
    text = Path(row.log_path).read_text(encoding="utf-8")
    assert "deployment COMPLETED" in text
    assert "registry-password" not in text


def test_rolling_deployment_never_serves_fewer_than_the_desired_healthy_tasks(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    old = {
        task_id: f"127.0.0.1:{yard.engine.inspect(task_id).port}"
        for task_id in yard.engine.task_ids
    }
    assert set(yard.upstreams() or []) == set(old.values())
    yard.engine.behave(V2, healthy=True, health_after=3)
    number = yard.deploy(yard.release(V2, replicas=2))

    first_start: dict[str, int] = {}
    unrouted: dict[str, int] = {}
    stopped: dict[str, int] = {}
    removed: dict[str, int] = {}
    for tick in range(1, 20):
        yard.tick()
        assert yard.routed_healthy() >= 2, f"tick {tick}: {yard.upstreams()}"
        if yard.started(V2):
            first_start.setdefault("v2", tick)
        routed = set(yard.upstreams() or [])
        stops = {args[0] for args in yard.engine.calls_to("stop")}
        for task_id, task_address in old.items():
            if task_address not in routed:
                unrouted.setdefault(task_id, tick)
            if task_id in stops:
                stopped.setdefault(task_id, tick)
            if task_id not in yard.engine.task_ids:
                removed.setdefault(task_id, tick)
        v1_left = any(t in yard.engine.task_ids for t in old)
        assert not (v1_left and yard.status(number) == "COMPLETED"), f"tick {tick}"
        if tick == 2:
            yard.clock.advance(3)  # the new tasks turn healthy
        if yard.status(number) == "COMPLETED":
            break

    assert yard.status(number) == "COMPLETED"
    assert yard.releases_running() == ["2", "2"]
    assert len(yard.started(V2)) == 2
    for task_id in old:
        assert first_start["v2"] < unrouted[task_id] < stopped[task_id] < removed[task_id]
    assert all(args[1] == 1 for args in yard.engine.calls_to("stop"))  # stop_timeout
    row = yard.deployment(number)
    counters = (row.tasks_started, row.tasks_healthy, row.tasks_routed, row.tasks_stopped)
    assert counters == (2, 2, 2, 2)


def test_release_with_the_running_digest_and_config_completes_without_new_tasks(
    yard: Yard,
) -> None:
    yard.ship(V1, replicas=2, variables={"GREETING": "hi"})
    running = yard.engine.task_ids
    number = yard.deploy(yard.copy_release(1))

    yard.tick()
    assert yard.status(number) == "COMPLETED"
    yard.tick(3)  # and the stage's loop keeps them as the new release's tasks
    assert yard.engine.task_ids == running
    assert len(yard.started()) == 2
    assert yard.engine.calls_to("stop") == []


def test_a_config_change_alone_replaces_the_tasks(yard: Yard) -> None:
    yard.ship(V1, variables={"GREETING": "hi"})
    (old,) = yard.engine.task_ids
    number = yard.deploy(yard.release(V1, variables={"GREETING": "hello"}))

    yard.run_until(lambda: yard.status(number) == "COMPLETED")
    (new,) = yard.engine.task_ids
    assert new != old
    assert yard.started()[-1].env["GREETING"] == "hello"


# -- deployments that fail: the circuit breaker, and the old tasks keep serving


def test_tasks_that_crash_at_start_fail_the_deployment_and_roll_back(yard: Yard) -> None:
    yard.ship(V1)
    (old,) = yard.engine.task_ids
    serving = list(addresses(yard, [old]))
    yard.engine.behave(V2, crash_after=0, exit_code=3, output=["boom: missing DATABASE_URL"])
    number = yard.deploy(yard.release(V2))

    failures = []
    for _ in range(10):
        yard.tick()
        assert yard.upstreams() == serving
        failures.append(yard.deployment(number).failures)
        if yard.status(number) != "IN_PROGRESS":
            break

    row = yard.deployment(number)
    assert row.status == "FAILED"
    assert failures == [0, 1, 2, 3]  # one per crashed task, each counted once
    assert len(yard.started(V2)) == 3
    assert "circuit breaker" in row.reason
    assert "exited with status 3" in row.reason
    assert "boom: missing DATABASE_URL" in row.reason
    assert yard.rollbacks == [
        RollbackCall(STACK, STAGE, 1, f"rollback: deployment {number} failed")
    ]
    assert old not in {args[0] for args in yard.engine.calls_to("stop")}

    # The rollback release copies release 1, which the old task already runs.
    yard.run_until(lambda: yard.status(number + 1) == "COMPLETED", limit=2)
    assert yard.engine.task_ids == [old]
    assert yard.upstreams() == serving


def test_tasks_that_never_turn_healthy_fail_the_deployment_with_the_check_output(
    yard: Yard,
) -> None:
    yard.ship(V1)
    (old,) = yard.engine.task_ids
    serving = list(addresses(yard, [old]))
    yard.engine.behave(V2, healthy=False, health_output="GET /healthz: HTTP 404")
    number = yard.deploy(yard.release(V2))

    for _ in range(15):
        yard.tick()
        assert yard.upstreams() == serving
        if yard.status(number) != "IN_PROGRESS":
            break

    row = yard.deployment(number)
    assert row.status == "FAILED"
    assert row.failures == 3
    assert "is unhealthy" in row.reason
    assert "GET /healthz: HTTP 404" in row.reason
    assert yard.rollbacks == [
        RollbackCall(STACK, STAGE, 1, f"rollback: deployment {number} failed")
    ]
    routed_ever = {u for call in yard.router.calls for u in call.upstreams}
    assert routed_ever == set(serving)
    yard.tick(2)
    assert yard.engine.task_ids == [old]  # every new task was stopped and removed


def test_an_engine_start_error_counts_as_a_failed_task(yard: Yard) -> None:
    yard.ship(V1)
    serving = yard.upstreams()
    yard.engine.behave(V2, start_error="port 8080 is already allocated")
    number = yard.deploy(yard.release(V2))

    yard.run_until(lambda: yard.status(number) == "FAILED")
    row = yard.deployment(number)
    assert row.failures == 3
    assert "failed to start" in row.reason
    assert row.reason.count("failed to start") == 1, row.reason  # said once, by the executor
    assert "port 8080 is already allocated" in row.reason
    assert len(yard.started(V2)) == 3
    assert row.tasks_started == 0
    assert yard.upstreams() == serving
    assert [r.number for r in yard.rollbacks] == [1]


def test_a_failed_first_deployment_has_nothing_to_roll_back_to(yard: Yard) -> None:
    yard.engine.behave(V1, crash_after=0, exit_code=1)
    number = yard.deploy(yard.release(V1))

    yard.run_until(lambda: yard.status(number) == "FAILED")
    assert yard.rollbacks == []
    text = Path(yard.deployment(number).log_path).read_text(encoding="utf-8")
    assert "no earlier COMPLETED release" in text
    yard.tick(2)
    assert yard.engine.task_ids == []


def test_a_route_port_in_use_fails_the_deployment_at_once(yard: Yard) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        number = yard.deploy(yard.release(V1, port=port))

        busy = yard.run_once()

    assert not busy
    row = yard.deployment(number)
    assert row.status == "FAILED"
    assert f"127.0.0.1:{port} is in use" in row.reason
    assert "set another `port:`" in row.reason  # the hint
    assert yard.started() == []
    assert yard.upstreams() is None


def test_an_unreachable_router_is_retried_not_failed(yard: Yard) -> None:
    number = yard.deploy(yard.release(V1))
    yard.router.reachable = False

    assert yard.run_once() is False
    row = yard.deployment(number)
    assert row.status == "IN_PROGRESS"
    assert row.reason.startswith("retrying: the fake router does not answer")

    yard.router.reachable = True
    for _ in range(5):
        yard.run_once()
    assert yard.status(number) == "COMPLETED"
    assert len(yard.started()) == 1


# -- keeping a stage running outside deployments


def test_a_task_that_exits_is_replaced_and_recorded_as_a_heal_event(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    dead, alive = yard.engine.task_ids
    yard.engine.emit(dead, "out of memory")
    yard.engine.kill(dead, exit_code=137)

    yard.tick()
    assert dead not in yard.engine.task_ids
    assert alive in yard.engine.task_ids
    assert len(yard.engine.task_ids) == 2
    assert len(yard.started()) == 3
    (event,) = yard.events("heal")
    assert event.subject == f"{STACK}/{STAGE}"
    assert "exited with status 137" in event.message
    assert "out of memory" in event.message

    yard.tick()
    assert set(yard.upstreams() or []) == addresses(yard, yard.engine.task_ids)
    yard.tick(3)
    assert len(yard.started()) == 3
    assert len(yard.events("heal")) == 1
    assert yard.status(1) == "COMPLETED"  # healing makes no deployment


def test_a_task_that_turns_unhealthy_is_unrouted_stopped_and_replaced(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    sick, well = yard.engine.task_ids
    yard.engine.set_health(sick, Health.UNHEALTHY, "GET /: HTTP 500")

    yard.tick(4)
    assert sick not in yard.engine.task_ids
    assert well in yard.engine.task_ids
    assert len(yard.engine.task_ids) == 2
    assert [args[0] for args in yard.engine.calls_to("stop")] == [sick]
    assert set(yard.upstreams() or []) == addresses(yard, yard.engine.task_ids)
    (event,) = yard.events("heal")
    assert "GET /: HTTP 500" in event.message


# -- a control plane or router that restarts


@pytest.mark.parametrize("restart_after", [1, 2, 3, 4, 5])
def test_a_restarted_control_plane_finishes_the_deployment_without_duplicates(
    yard: Yard, restart_after: int
) -> None:
    yard.ship(V1, replicas=2)
    yard.engine.behave(V2, healthy=True, health_after=3)
    number = yard.deploy(yard.release(V2, replicas=2))

    for tick in range(1, 20):
        yard.tick()
        assert yard.routed_healthy() >= 2, f"tick {tick}"
        if tick == 2:
            yard.clock.advance(3)
        if tick == restart_after:
            assert yard.status(number) == "IN_PROGRESS"
            yard.restart_controller()
        if yard.status(number) == "COMPLETED":
            break

    assert yard.status(number) == "COMPLETED"
    assert yard.releases_running() == ["2", "2"]
    assert len(yard.started(V2)) == 2
    assert yard.deployment(number).tasks_started == 2


def test_a_restarted_router_gets_its_route_back_with_the_healthy_tasks(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    serving = set(yard.upstreams() or [])
    starts = len(yard.started())
    yard.router.restart()
    assert yard.upstreams() is None

    yard.tick()
    assert set(yard.upstreams() or []) == serving
    ensure = [c for c in yard.router.calls if c.method == "ensure_route"]
    assert ensure[-1].route == ROUTE_NAME
    assert set(ensure[-1].upstreams) == serving
    assert len(yard.started()) == starts
    assert yard.engine.calls_to("stop") == []


def test_a_router_restart_during_a_rollout_routes_the_old_tasks_again(yard: Yard) -> None:
    yard.ship(V1, replicas=2)
    serving = set(yard.upstreams() or [])
    yard.engine.behave(V2, healthy=True, health_after=3)
    number = yard.deploy(yard.release(V2, replicas=2))
    yard.tick(2)  # the new tasks are starting
    yard.router.restart()

    yard.tick()
    assert set(yard.upstreams() or []) == serving
    yard.clock.advance(3)
    yard.run_until(lambda: yard.status(number) == "COMPLETED")
    assert yard.releases_running() == ["2", "2"]


def test_a_new_health_check_judges_only_the_new_tasks(yard: Yard) -> None:
    yard.ship(V1, replicas=2)  # the image's HEALTHCHECK (no probes)
    serving = set(yard.upstreams() or [])
    # The new release brings an HTTP check that the old tasks may not pass; no probe runs
    # here, so its tasks stay STARTING, and the old tasks keep serving by their own check.
    number = yard.deploy(yard.release(V2, replicas=2, health={"path": "/healthz"}))
    yard.tick(5)
    assert yard.status(number) == "IN_PROGRESS"
    assert set(yard.upstreams() or []) == serving
    assert len(yard.started(V2)) == 2


# -- the release snapshot the pipeline writes


def test_a_release_snapshot_of_a_docker_health_stage_is_deployable(yard: Yard) -> None:
    config = StackConfig.model_validate(
        {"stages": [{"name": STAGE, "health": {"type": "docker"}}]}
    ).model_dump(mode="json")
    number = yard.deploy(yard.release_with_config(V1, config_snapshot(config, STAGE)))

    yard.run_until(lambda: yard.status(number) == "COMPLETED", limit=5)


def test_a_failed_rollback_does_not_roll_back_again(yard: Yard) -> None:
    yard.ship(V1)
    (old,) = yard.engine.task_ids
    yard.engine.behave(V2, crash_after=0, exit_code=3)
    yard.engine.kill(old)  # the old task dies, and its image is gone from the registry
    yard.engine.behave(V1, missing=True)
    number = yard.deploy(yard.release(V2))

    yard.run_until(lambda: yard.status(number) == "FAILED")
    yard.run_until(lambda: yard.status(number + 1) == "FAILED")
    yard.tick(10)
    assert [r.number for r in yard.rollbacks] == [1]  # no rollback of the rollback
    assert yard.status(number + 1) == "FAILED"
    text = Path(yard.deployment(number + 1).log_path).read_text(encoding="utf-8")
    assert "not rolling back: release 1" in text


def test_a_task_stopped_for_failing_is_not_counted_again_after_a_restart(yard: Yard) -> None:
    yard.ship(V1)
    yard.engine.behave(V2, healthy=False, health_output="GET /healthz: HTTP 404")
    number = yard.deploy(yard.release(V2))
    yard.tick(2)  # the new task started, failed its check (1 failure) and was stopped
    assert yard.deployment(number).failures == 1

    yard.restart_controller()
    yard.tick()
    assert yard.deployment(number).failures == 1

    yard.run_until(lambda: yard.status(number) == "FAILED")
    assert len(yard.started(V2)) == 3


class MeetingEngine(FakeEngine):
    """A FakeEngine whose starts wait for each other: they pass only when ``party`` of them
    are under way at the same time."""

    def __init__(self, party: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meeting = threading.Barrier(party, timeout=10)

    def start(self, spec: TaskSpec) -> TaskInfo:
        self.meeting.wait()  # BrokenBarrierError (a failed start) if they come one by one
        return super().start(spec)


def test_the_tasks_of_a_rollout_start_together(yard: Yard) -> None:
    engine = MeetingEngine(3, clock=yard.clock)
    yard.engine = engine
    yard.restart_controller()  # a control plane on this engine
    yard.ship(V1, replicas=3)
    assert len(engine.calls_to("start")) == 3
    assert yard.releases_running() == ["1", "1", "1"]


# -- a step that fails: recorded, never swallowed


def test_an_engine_that_does_not_answer_is_retried_not_failed(yard: Yard) -> None:
    number = yard.deploy(yard.release(V1))
    yard.engine.reachable = False
    with pytest.raises(ComponentError):
        yard.controller.watch.resync()  # the watch's thread finds the engine gone

    assert yard.controller.loop_for(KEY).run_once() is False
    row = yard.deployment(number)
    assert row.status == "IN_PROGRESS"  # it began: its error budget runs
    assert row.reason.startswith("retrying: the fake engine is unreachable")
    assert yard.started() == []

    yard.engine.reachable = True
    yard.run_until(lambda: yard.status(number) == "COMPLETED")


def test_a_deployment_fails_even_when_its_log_cannot_be_written(
    yard: Yard, caplog: pytest.LogCaptureFixture
) -> None:
    number = yard.deploy(yard.release(V1))
    yard.tick()  # it began, and its log has its first line
    log_path = Path(yard.deployment(number).log_path)
    log_path.unlink()
    log_path.mkdir()  # no file can be written there any more
    yard.router.fail_next(PermanentError("the router refuses this route for good"))

    assert yard.run_once() is False
    row = yard.deployment(number)
    assert row.status == "FAILED"
    assert row.reason == "the router refuses this route for good"
    assert row.finished_at is not None
    assert f"its log {log_path} could not be written" in caplog.text
    assert changes.ended(log_path)  # whoever follows the log is not left waiting


def test_a_store_that_refuses_the_failure_is_logged_and_tried_again(
    yard: Yard, caplog: pytest.LogCaptureFixture
) -> None:
    number = yard.deploy(yard.release(V1))
    yard.tick()

    def refuse(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("UPDATE deployments"):
            raise OperationalError(statement, None, Exception("database is locked"))

    event.listen(yard.database, "before_cursor_execute", refuse)
    yard.router.fail_next(PermanentError("the router refuses this route for good"))
    assert yard.run_once() is False
    assert yard.status(number) == "IN_PROGRESS"
    assert "cannot record on its deployment that a step failed" in caplog.text
    assert "database is locked" in caplog.text

    event.remove(yard.database, "before_cursor_execute", refuse)
    yard.router.fail_next(PermanentError("the router refuses this route for good"))
    yard.run_once()
    assert yard.status(number) == "FAILED"
    text = Path(yard.deployment(number).log_path).read_text(encoding="utf-8")
    assert "deployment FAILED: the router refuses this route for good" in text


class NoImageHealth(FakeEngine):
    supports_image_healthcheck: ClassVar[bool] = False


class NoHostRoutes(FakeRouter):
    supports_host_routes: ClassVar[bool] = False


def test_a_stage_that_needs_an_ability_the_engine_lacks_fails_naming_it(yard: Yard) -> None:
    yard.engine = NoImageHealth(clock=yard.clock)
    yard.restart_controller()
    number = yard.deploy(yard.release(V1))  # health.type: docker

    assert yard.run_once() is False
    row = yard.deployment(number)
    assert row.status == "FAILED"  # at once: retrying cannot help
    assert "cannot judge stage shop/dev by its image's HEALTHCHECK" in row.reason
    assert "set health.type: http" in row.reason
    assert yard.started() == []


def test_a_host_route_on_a_router_without_them_fails_naming_it(yard: Yard) -> None:
    yard.router = NoHostRoutes()
    yard.restart_controller()
    number = yard.deploy(yard.release(V1, host="shop.test"))

    assert yard.run_once() is False
    row = yard.deployment(number)
    assert row.status == "FAILED"
    assert "cannot serve stage shop/dev on the host name shop.test" in row.reason
    assert yard.router.served == {}


# -- a stage on a target with its own registry


def test_a_stage_on_a_target_pulls_from_the_targets_registry_with_its_login(yard: Yard) -> None:
    eu_login = RegistryLogin("127.0.0.1:5998", "bot", "eu-password")
    eu = TargetPlace("eu", "eu-west", Placement("eu", None, "acme", eu_login), builtin=False)
    yard.controller.targets = lambda name: {"eu": eu}.get(name) or only_local(name)
    eu_engine = yard.target_engines["eu"] = FakeEngine(yard.clock)
    eu_engine.behave(V1, healthy=True)
    number = yard.deploy(yard.release(V1, target="eu"))
    yard.run_until(lambda: yard.status(number) == "COMPLETED")
    (spec,) = [args[0] for args in eu_engine.calls_to("start")]
    assert isinstance(spec, TaskSpec)
    assert spec.image == f"127.0.0.1:5998/acme/{STACK}@{V1}"
    assert spec.login == eu_login


def test_a_stage_runs_stops_and_heals_on_its_targets_engine(yard: Yard) -> None:
    eu_engine = yard.target_engines["eu"] = FakeEngine(yard.clock)
    yard.controller.targets = lambda name: TargetPlace(name, builtin=False)
    for digest in (V1, V2):
        eu_engine.behave(digest, healthy=True)
    first = yard.deploy(yard.release(V1, target="eu"))
    yard.run_until(lambda: yard.status(first) == "COMPLETED")
    (v1_task,) = eu_engine.task_ids
    assert yard.controller.engines.target_of(v1_task) == "eu"

    eu_engine.kill(v1_task)  # it crashes on eu: replaced there
    eu_engine.emit(v1_task, "boom")
    yard.run_until(lambda: len([t for t in eu_engine.task_ids if t != v1_task]) == 1)
    (healed,) = [t for t in eu_engine.task_ids if t != v1_task]
    assert [args[0] for args in eu_engine.calls_to("remove")] == [v1_task]

    second = yard.deploy(yard.release(V2, target="eu"))
    yard.run_until(lambda: yard.status(second) == "COMPLETED" and len(eu_engine.task_ids) == 1)
    assert healed in [args[0] for args in eu_engine.calls_to("stop")]
    assert [t.digest for t in eu_engine.list({})] == [V2]
    assert yard.made == ["eu"]  # one engine for the target, made once and kept
    # The platform's own engine was never asked to start, stop or remove anything.
    assert [name for name, _ in yard.engine.calls if name in ("start", "stop", "remove")] == []


def test_a_target_on_the_platforms_own_engine_sees_each_task_once(yard: Yard) -> None:
    yard.target_engines["eu"] = yard.engine  # another connection to the same engine
    yard.controller.targets = lambda name: TargetPlace(name, builtin=False)
    yard.engine.behave(V1, healthy=True)
    number = yard.deploy(yard.release(V1, target="eu"))
    yard.run_until(lambda: yard.status(number) == "COMPLETED")
    yard.tick(3)
    assert len(yard.engine.task_ids) == 1
    assert yard.engine.calls_to("stop") == []
    assert yard.controller.loop_for(KEY).memory.deployment is None


def test_an_unreachable_target_holds_up_only_its_stage_and_names_the_target(yard: Yard) -> None:
    eu_engine = yard.target_engines["eu"] = FakeEngine(yard.clock)
    yard.controller.targets = lambda name: TargetPlace(name, builtin=False)
    eu_engine.behave(V1, healthy=True)
    eu_engine.reachable = False
    number = yard.deploy(yard.release(V1, target="eu"))

    assert yard.run_once() is False
    row = yard.deployment(number)
    assert row.status == "IN_PROGRESS"  # its error budget runs, as for the platform's engine
    assert row.reason.startswith("retrying: target eu: the fake engine is unreachable")
    assert "stackyard targets check eu" in row.reason
    assert yard.controller.watch.problem() is None  # the platform's own engine is fine
    assert yard.engine.calls_to("start") == []

    eu_engine.reachable = True
    yard.run_until(lambda: yard.status(number) == "COMPLETED")
    assert len(eu_engine.task_ids) == 1


def test_a_task_that_cannot_start_on_a_target_fails_its_deployment_naming_the_target(
    yard: Yard,
) -> None:
    # The engine's error names the engine's address and the call; the stage's reason
    # says which target that is, and how to check it (as the watch's problems do).
    eu_engine = yard.target_engines["eu"] = FakeEngine(yard.clock)
    yard.controller.targets = lambda name: TargetPlace(name, builtin=False)
    hung = "the Docker engine at tcp://10.0.0.5:2376 did not answer (in POST /containers/create)"
    eu_engine.behave(V1, start_error=hung)
    number = yard.deploy(yard.release(V1, target="eu"))
    yard.run_until(lambda: yard.status(number) == "FAILED")
    row = yard.deployment(number)
    assert "failed to start: target eu: " in row.reason, row.reason
    assert hung in row.reason, row.reason
    assert "(check it: stackyard targets check eu)" in row.reason, row.reason
    assert yard.engine.calls_to("start") == []


def test_a_stage_on_a_target_that_is_gone_fails_its_deployment_naming_it(yard: Yard) -> None:
    yard.engine.behave(V1, healthy=True)
    number = yard.deploy(yard.release(V1, target="us"))
    assert yard.run_once() is False  # at once: no retry can make the target exist
    assert yard.status(number) == "FAILED"
    assert yard.started() == []
    row = yard.deployment(number)
    assert row.reason == "no target named 'us' (targets: local)"
    assert "no target named 'us'" in Path(row.log_path).read_text(encoding="utf-8")


# -- the checks before a deployment is recorded, and orphans, on each target's engine


def deploy_service(yard: Yard) -> DeployService:
    return DeployService(yard.sessions, yard.controller, Settings(data_dir=yard.tmp / "data"))


def test_a_deploy_asks_the_engine_of_its_releases_target_only(yard: Yard) -> None:
    eu_engine = yard.target_engines["eu"] = FakeEngine(yard.clock)
    yard.controller.targets = lambda name: TargetPlace(name, builtin=False)
    deploy = deploy_service(yard)
    on_eu = yard.release(V1, target="eu")

    yard.engine.reachable = False  # the platform's own engine is down: not eu's business
    deploy.ping(STACK, STAGE, on_eu)

    eu_engine.reachable = False
    with pytest.raises(ComponentError) as refused:
        deploy.ping(STACK, STAGE)  # the latest release: the one on eu
    assert refused.value.message.startswith("target eu: the fake engine is unreachable")
    assert refused.value.hint == "check it: stackyard targets check eu"

    on_local = yard.release(V2)
    with pytest.raises(ComponentError, match="the fake engine is unreachable") as local:
        deploy.ping(STACK, STAGE, on_local)
    assert "target" not in local.value.message  # the platform's own engine, as before


def test_a_deploy_to_a_target_that_does_not_answer_does_not_follow_it(yard: Yard) -> None:
    # A watch starts by listing its engine with the client's long timeout: the deploy's
    # check (short) comes first, and a refused one leaves the target unfollowed.
    us_engine = yard.target_engines["us"] = FakeEngine(yard.clock)
    yard.controller.targets = lambda name: TargetPlace(name, builtin=False)
    deploy = deploy_service(yard)
    us_engine.reachable = False
    with pytest.raises(ComponentError, match=r"^target us: "):
        deploy.ping(STACK, STAGE, yard.release(V1, target="us"))
    assert [name for name, _ in yard.controller.engines.followed()] == ["local"]

    us_engine.reachable = True
    deploy.ping(STACK, STAGE)
    assert [name for name, _ in yard.controller.engines.followed()] == ["local", "us"]


def test_orphans_are_removed_from_every_targets_engine_even_one_no_stage_runs_on(
    yard: Yard,
) -> None:
    eu_engine = yard.target_engines["eu"] = FakeEngine(yard.clock)
    us_engine = yard.target_engines["us"] = FakeEngine(yard.clock)
    labels = {LABEL_PLATFORM: PLATFORM, LABEL_STAGE: STAGE}
    image = f"{REGISTRY}/{STACK}@{V1}"
    for engine in (eu_engine, us_engine):
        for stack in (STACK, "deleted"):
            name = f"{stack}-{len(engine.task_ids)}"
            spec = TaskSpec(
                name=name, image=image, port=None, labels={**labels, LABEL_STACK: stack}
            )
            engine.start(spec)
    other = {**labels, LABEL_PLATFORM: "another-platform", LABEL_STACK: "deleted"}
    eu_engine.start(TaskSpec(name="theirs", image=image, port=None, labels=other))
    yard.restart_controller()
    yard.controller.target_names = lambda: ("local", "eu", "us", "gone")
    yard.controller.engines.follow("eu")  # eu is in use; us is reached for this only

    yard.controller.start()
    yard.restart_controller()  # its stop waits for the clean-up on the stop pool

    for engine in (eu_engine, us_engine):
        kept = [engine.inspect(i) for i in engine.task_ids]
        assert sorted(t.labels[LABEL_STACK] for t in kept if t.running) == (
            ["deleted", STACK] if engine is eu_engine else [STACK]
        )  # eu keeps another platform's task
    assert yard.made.count("us") == 1
    assert "gone" in yard.made  # a target that cannot be reached is noted; nothing fails


def test_tasks_a_deletion_left_are_removed_on_the_second_look_once_their_engine_answers(
    yard: Yard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swarm manager that restarts while a stack is deleted leaves its tasks running; the
    platform removes them without a restart, and keeps every task of a stack that exists."""
    yard.ship(V1, replicas=2)
    with yard.sessions.begin() as session:
        session.add(Stack(name="kept", repo="https://example.invalid/kept.git"))
    labels = {LABEL_PLATFORM: PLATFORM, LABEL_STACK: "kept", LABEL_STAGE: STAGE}
    kept = yard.engine.start(
        TaskSpec(name="kept-1", image=f"{REGISTRY}/kept@{V1}", port=None, labels=labels)
    )
    shop = [t.id for t in yard.tasks() if t.labels[LABEL_STACK] == STACK]
    assert len(shop) == 2

    def refused(task_id: str) -> None:
        raise EngineError(f"cannot remove task {task_id}: the manager did not answer")

    with yard.sessions.begin() as session:
        session.delete(session.scalars(select(Stack).where(Stack.name == STACK)).one())
    with monkeypatch.context() as patched:
        patched.setattr(yard.engine, "remove", refused)
        with pytest.raises(StackyardError) as failed:
            yard.controller.forget(STACK)
    assert "could not be removed" in failed.value.message
    assert "removes the tasks and routes left once" in str(failed.value.hint)
    assert set(shop) <= set(yard.engine.task_ids)

    yard.resync()
    yard.controller.sweep_orphans()  # the first look only notes them
    assert set(shop) <= set(yard.engine.task_ids)
    yard.controller.sweep_orphans()
    assert yard.engine.task_ids == [kept.id]
    assert not yard.controller.watch.has(shop[0])


def test_a_route_a_deletion_left_is_removed_on_the_next_look(yard: Yard) -> None:
    """A deletion while the router is down leaves the stack's route (a restarted Caddy
    serves every route it had); the sweep's next look removes it, and keeps every other
    stack's route and the platform's own (a name with a dot)."""
    yard.ship(V1)
    ours = f"{STACK}-{STAGE}"
    assert ours in yard.router.served
    yard.router.ensure_route(Route("other-prod", port=9101), ["127.0.0.1:1"])
    yard.router.ensure_route(Route("stackyard.api", host="api.example.com"), ["127.0.0.1:2"])
    with yard.sessions.begin() as session:
        other = Stack(name="other", repo="https://example.invalid/other.git")
        session.add(other)
        session.flush()
        session.add(StageRoute(stack_id=other.id, stage="prod", port=9101))
    routes = yard.controller.routes_of(STACK)
    with yard.sessions.begin() as session:
        session.delete(session.scalars(select(Stack).where(Stack.name == STACK)).one())
    yard.router.reachable = False
    with pytest.raises(StackyardError) as failed:
        yard.controller.forget(STACK, routes)
    assert f"route {ours}" in failed.value.message
    assert "removes the tasks and routes left once" in str(failed.value.hint)
    yard.router.reachable = True

    yard.controller.sweep_routes()  # a route its deletion left: the first look removes it
    assert sorted(yard.router.served) == ["other-prod", "stackyard.api"]


def test_a_route_sweep_forgets_what_it_saw_when_the_router_does_not_answer(
    yard: Yard,
) -> None:
    """A route no deletion named (a Caddy that resumed an old config) goes on the second of
    two looks in a row that found it; a look that could not list the routes starts the
    count again."""
    yard.router.ensure_route(Route("gone-dev", port=9102), ["127.0.0.1:1"])
    yard.controller.sweep_routes()
    yard.router.reachable = False
    yard.controller.sweep_routes()  # no answer: nothing removed, nothing remembered
    yard.router.reachable = True
    yard.controller.sweep_routes()
    assert "gone-dev" in yard.router.served
    yard.controller.sweep_routes()
    assert "gone-dev" not in yard.router.served


def test_deleting_a_stack_stops_its_tasks_all_at_once(
    yard: Yard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop waits for its task to end (its grace period, for an app that ignores
    SIGTERM): one after another, a stack of ten replicas took ten of them."""
    yard.ship(V1, replicas=3)
    together = threading.Barrier(3, timeout=10)  # each stop waits for the other two
    stopping = yard.engine.stop

    def stop(task_id: str, timeout: float) -> None:
        together.wait()
        stopping(task_id, timeout)

    monkeypatch.setattr(yard.engine, "stop", stop)
    with yard.sessions.begin() as session:
        session.delete(session.scalars(select(Stack).where(Stack.name == STACK)).one())
    yard.controller.forget(STACK)
    assert yard.engine.task_ids == []


def test_a_stage_is_observed_on_its_deployments_target_not_its_newest_releases(
    yard: Yard,
) -> None:
    """The rule docs/targets.md states: a stage's loop (one per stage with a release, at
    start) looks at, and so follows, the target of its active deployment's release, else of
    the release it serves (its last COMPLETED deployment's). A release never deployed
    follows nothing: its target is reached first by a deploy's check (``DeployService.ping``)."""
    yard.target_engines["eu"] = eu_engine = FakeEngine(yard.clock)
    eu_engine.behave(V1, healthy=True)

    def restart() -> None:
        yard.restart_controller()
        yard.controller.targets = lambda name: TargetPlace(name, builtin=False)

    def followed() -> list[str]:
        return [name for name, _ in yard.controller.engines.followed()]

    restart()
    on_eu = yard.release(V1, target="eu")
    restart()
    yard.tick(2)
    assert (followed(), yard.made) == (["local"], [])  # released, never deployed

    number = yard.deploy(on_eu)
    yard.run_until(lambda: yard.status(number) == "COMPLETED")
    yard.release(V2, target="us")  # the newest release names a target never deployed to
    restart()
    assert followed() == ["local"]
    yard.tick(2)
    assert followed() == ["local", "eu"]
    assert "us" not in yard.made


# -- a release whose image the registry no longer has (deleted after the API checked)

GONE = f"no longer in registry {REGISTRY} ({STACK}): retention keeps only the images of the last"


def test_a_recorded_deployment_whose_image_was_deleted_fails_before_any_task_starts(
    yard: Yard,
) -> None:
    yard.ship(V1)
    (old,) = yard.engine.task_ids
    serving = yard.upstreams()
    number = yard.deploy(yard.release(V2))
    yard.manifests.deleted.add(V2)  # after the API asked, before the loop starts tasks

    yard.run_once()
    row = yard.deployment(number)
    assert row.status == "FAILED"
    assert row.reason.startswith(
        f"release 2 of {STACK}/{STAGE} cannot be deployed: its image {V2} "
    )
    assert GONE in row.reason
    assert "(release a newer one, or build and release its commit again)" in row.reason
    assert yard.started(V2) == []  # the engine's cached copy was never started
    assert yard.rollbacks == []  # nothing changed: release 1 still serves
    text = Path(row.log_path).read_text(encoding="utf-8")
    assert f"deployment FAILED: release 2 of {STACK}/{STAGE} cannot be deployed" in text
    yard.tick(2)
    assert (yard.engine.task_ids, yard.upstreams()) == ([old], serving)


def test_an_automatic_rollback_to_a_deleted_image_names_the_release_and_keeps_the_old_tasks(
    yard: Yard,
) -> None:
    yard.ship(V1)
    (old,) = yard.engine.task_ids
    serving = yard.upstreams()
    yard.manifests.deleted.add(V1)  # by hand: release 1 still runs from the engine's copy
    yard.engine.behave(V2, crash_after=0, exit_code=3)
    number = yard.deploy(yard.release(V2))

    yard.run_until(lambda: yard.status(number) == "FAILED")
    assert yard.rollbacks == []  # refused before the copy (its retag would fail)
    rollback = f"rollback to release 1 failed: release 1 of {STACK}/{STAGE} cannot be deployed"
    row = yard.deployment(number)
    assert "circuit breaker" in row.reason
    assert f"; {rollback}: its image {V1} is {GONE}" in row.reason
    text = Path(row.log_path).read_text(encoding="utf-8")
    assert f"{rollback}: its image {V1}" in text
    assert "(release a newer one, or build and release its commit again)" in text
    yard.tick(3)  # the stage stays on release 1, its last COMPLETED one, still served
    assert (yard.engine.task_ids, yard.upstreams()) == ([old], serving)


def test_a_heal_of_a_release_whose_image_was_deleted_starts_the_engines_copy_and_says_so(
    yard: Yard,
) -> None:
    yard.ship(V1)
    (dead,) = yard.engine.task_ids
    yard.manifests.deleted.add(V1)
    yard.engine.kill(dead, exit_code=137)

    yard.run_until(lambda: len([t for t in yard.tasks() if t.running]) == 1)
    assert len(yard.started(V1)) == 2  # replaced all the same
    (event,) = yard.events("image")
    assert event.message.startswith(f"release 1 is served but its image {V1} is {GONE}")
    assert "self-healing starts the engine's own copy of it" in event.message
    assert len(yard.events("heal")) == 1
    (healed,) = [t.id for t in yard.tasks() if t.running]
    yard.engine.kill(healed, exit_code=137)  # again: replaced, and said once only
    yard.run_until(lambda: len([t for t in yard.tasks() if t.running]) == 1)
    assert len(yard.started(V1)) == 3
    assert len(yard.events("image")) == 1


def test_a_registry_that_cannot_tell_does_not_hold_up_a_deployment(yard: Yard) -> None:
    yard.manifests.refusing = True
    number = yard.ship(V1)
    text = Path(yard.deployment(number).log_path).read_text(encoding="utf-8")
    assert f"registry {REGISTRY} could not tell whether it still has {STACK}@{V1}" in text
    assert yard.manifests.asked == [V1]  # asked once, before the start
