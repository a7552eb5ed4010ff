"""Every error says whether a retry may help; callers that retry read that, not the type."""

from __future__ import annotations

from typing import ClassVar

import httpx
import pytest

from stackyard.errors import (
    ComponentError,
    ConfigError,
    NotFoundError,
    PermanentError,
    RetryableError,
    StackyardError,
    UnsupportedError,
    UsageError,
    is_retryable,
    require,
)
from stackyard.images.registry_transport import RegistryTransport


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (UsageError, False),
        (ConfigError, False),
        (UnsupportedError, False),
        (NotFoundError, False),
        (PermanentError, False),
        (ComponentError, True),
        (RetryableError, True),
        (StackyardError, True),
    ],
)
def test_each_class_says_whether_a_retry_may_help(
    error: type[StackyardError], retryable: bool
) -> None:
    assert error("x").retryable is retryable
    assert is_retryable(error("x")) is retryable


def test_an_adapter_that_knows_better_overrides_one_instance() -> None:
    missing_binary = ComponentError("git is not installed", retryable=False)
    race = NotFoundError("task abc does not exist (any more)", retryable=True)
    assert (missing_binary.retryable, race.retryable) == (False, True)
    assert ComponentError("the engine did not answer").retryable is True  # class default kept


def test_exceptions_nobody_classified_count_as_retryable() -> None:
    assert is_retryable(OSError("disk full"))
    assert is_retryable(KeyError("bug"))


def test_usage_errors_keep_exit_status_2_and_others_1() -> None:
    assert (UsageError("x").exit_code, UnsupportedError("x").exit_code) == (2, 2)
    assert (NotFoundError("x").exit_code, ComponentError("x").exit_code) == (1, 1)


class _Poller:
    name: ClassVar[str] = "svn"
    supports_head: ClassVar[bool] = False


class _Watcher(_Poller):
    supports_head: ClassVar[bool] = True


def test_require_passes_an_adapter_with_the_ability() -> None:
    require(_Watcher(), "head", needed_for="poll a branch", hint="turn polling off")


def test_require_names_the_adapter_the_ability_and_what_to_do() -> None:
    with pytest.raises(UnsupportedError) as caught:
        require(_Poller(), "head", needed_for="poll a branch", hint="turn polling off")
    assert str(caught.value) == "_Poller ('svn') cannot poll a branch: it does not support head"
    assert caught.value.hint == "turn polling off"
    assert caught.value.retryable is False


def test_require_treats_an_undeclared_ability_as_missing() -> None:
    with pytest.raises(UnsupportedError, match="does not support cross repository mount"):
        require(object(), "cross_repository_mount", needed_for="mount", hint="copy instead")


def _transport(answers: list[int]) -> RegistryTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200)

    return RegistryTransport(
        "registry.test", retries=3, backoff=0.0, transport=httpx.MockTransport(answer)
    )


def test_the_registry_transport_retries_what_is_retryable_by_the_property() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ComponentError("the registry's storage is not ready")  # retryable by default
        return "done"

    assert _transport([]).retrying("read", flaky) == "done"
    assert len(attempts) == 3


def test_the_registry_transport_stops_at_once_on_an_instance_marked_permanent() -> None:
    attempts: list[int] = []

    def refused() -> str:
        attempts.append(1)
        raise RetryableError("quota exceeded for good", retryable=False)

    with pytest.raises(RetryableError, match="quota exceeded"):
        _transport([]).retrying("read", refused)
    assert len(attempts) == 1


def test_the_registry_transport_gives_up_after_its_attempts_with_a_retryable_error() -> None:
    transport = _transport([503, 503, 503])
    with pytest.raises(RetryableError) as caught:
        transport.request("GET", "/v2/", operation="ping", scopes=())
    assert "after 3 attempts: HTTP 503" in str(caught.value)
    assert caught.value.retryable is True
