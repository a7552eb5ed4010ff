"""The network mode tasks and builds get: the setting, or with ``auto`` what the engine has."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackyard.engines.fake import FakeEngine
from stackyard.errors import StackyardError
from stackyard.pipeline.services import task_network_mode
from stackyard.settings import Settings


def settings(tmp_path: Path, mode: str) -> Settings:
    return Settings(data_dir=tmp_path).with_overrides(network_mode=mode)


@pytest.mark.parametrize(("bridge", "expected"), [(True, "bridge"), (False, "host")])
def test_auto_is_bridge_exactly_where_the_engine_has_a_bridge_network(
    tmp_path: Path, bridge: bool, expected: str
) -> None:
    engine = FakeEngine(bridge_network=bridge)
    assert task_network_mode(settings(tmp_path, "auto"), engine) == expected


def test_auto_with_an_engine_that_does_not_answer_starts_in_host_mode_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeEngine(bridge_network=True)
    engine.reachable = False
    assert task_network_mode(settings(tmp_path, "auto"), engine) == "host"
    assert "fake engine is unreachable" in caplog.text
    assert "until the platform restarts" in caplog.text


def test_an_explicit_mode_is_kept_and_bridge_needs_the_engine_s_support(tmp_path: Path) -> None:
    engine = FakeEngine(bridge_network=False)
    engine.reachable = False  # an explicit mode does not ask the engine
    assert task_network_mode(settings(tmp_path, "host"), engine) == "host"
    assert task_network_mode(settings(tmp_path, "bridge"), engine) == "bridge"

    class NoBridge(FakeEngine):
        supports_bridge_network = False

    with pytest.raises(StackyardError, match="bridge networking"):
        task_network_mode(settings(tmp_path, "bridge"), NoBridge())
