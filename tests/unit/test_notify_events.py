"""Event names, the notices they make, and the retry decisions: pure, by equality."""

from __future__ import annotations

import pytest

from stackyard.channels.base import Severity, check_url, refuse_platform_endpoint
from stackyard.errors import UsageError
from stackyard.notify.channels import shown
from stackyard.notify.events import (
    SUBSCRIBABLE,
    DeploymentFacts,
    EventKind,
    Notice,
    approval_waiting,
    parse_events,
    rolled_back,
)
from stackyard.notify.retry import (
    Delivered,
    GiveUp,
    Outcome,
    RetryIn,
    RetryPolicy,
    after_attempt,
)

DIGEST = "sha256:" + "1" * 64


def test_events_are_named_one_by_one_or_as_comma_lists_and_all_by_default() -> None:
    assert parse_events([]) == list(SUBSCRIBABLE)
    assert parse_events(["all"]) == list(SUBSCRIBABLE)
    assert parse_events(["rolled-back,approval", "failed"]) == [
        EventKind.APPROVAL,
        EventKind.FAILED,
        EventKind.ROLLED_BACK,
    ]
    assert EventKind.TEST not in SUBSCRIBABLE


@pytest.mark.parametrize("name", ["deployed", "test", "Approval"])
def test_an_unknown_event_is_refused_with_the_list_of_events(name: str) -> None:
    with pytest.raises(UsageError, match=f"'{name}' is not an event") as refused:
        parse_events([name])
    assert "approval, completed, failed, rolled-back, build-failed, healed, certificate" in str(
        refused.value.hint
    )


def test_an_approval_notice_says_how_to_approve_and_links_the_stack() -> None:
    notice = approval_waiting("shop", "prod", 12, "0123456789abcdef" * 2)
    assert notice == Notice(
        kind=EventKind.APPROVAL,
        stack="shop",
        stage="prod",
        title="shop: run 12 waits for an approval to enter prod",
        text="Approve it with `stackyard approve shop --stage prod`, or from the stack's "
        "page in the console.",
        fields=(
            ("Stack", "shop"),
            ("Stage", "prod"),
            ("Run", "12"),
            ("Commit", "0123456789ab"),
            ("Approve", "stackyard approve shop --stage prod"),
        ),
        path="/ui/stacks/shop",
        severity=Severity.WAITING,
    )
    assert Notice.from_json("approval", "shop", "prod", notice.to_json()) == notice


def test_a_rollback_notice_has_the_reason_and_the_digest_it_went_back_to() -> None:
    failed = DeploymentFacts("shop", "prod", 4, 7, "sha256:" + "2" * 64, "run 9", "task died")
    notice = rolled_back(failed, to=6, digest=DIGEST, release=8)
    assert notice.text == "task died"
    assert ("Back to digest", DIGEST) in notice.fields
    assert ("Back to release", "6") in notice.fields
    assert ("New release", "8") in notice.fields
    assert ("Log", "stackyard logs shop --deployment 4 --stage prod") in notice.fields


# -- retries


POLICY = RetryPolicy(first=5, factor=2, longest=60, attempts=6)


def test_a_delivered_try_ends_the_delivery() -> None:
    assert after_attempt(POLICY, 1, Outcome(True, "HTTP 200")) == Delivered()


def test_retries_back_off_doubling_up_to_the_longest_pause() -> None:
    failed = Outcome(False, "HTTP 503")
    pauses = [after_attempt(POLICY, n, failed) for n in range(1, 6)]
    assert pauses == [RetryIn(5), RetryIn(10), RetryIn(20), RetryIn(40), RetryIn(60)]
    assert after_attempt(POLICY, 6, failed) == GiveUp("gave up after 6 tries: HTTP 503")


def test_a_receiver_that_asks_to_wait_longer_is_obeyed() -> None:
    limited = Outcome(False, "HTTP 429", retry_after=30)
    assert after_attempt(POLICY, 1, limited) == RetryIn(30)
    assert after_attempt(POLICY, 4, limited) == RetryIn(40)  # the back-off is longer already


def test_a_permanent_refusal_is_not_tried_again() -> None:
    refused = Outcome(False, "HTTP 404: no_service", retryable=False)
    assert after_attempt(POLICY, 1, refused) == GiveUp("refused for good: HTTP 404: no_service")


# -- where a channel may send


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T/B/x",  # a token in the clear
        "ftp://127.0.0.1/x",
        "https://user:pw@example.com/hook",
        "not a url",
    ],
)
def test_urls_that_would_leak_or_cannot_work_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        check_url(url, "the Slack webhook URL")


def test_plain_http_is_fine_on_the_loopback_and_https_anywhere() -> None:
    assert check_url("http://127.0.0.1:9000/hook", "x") == ("127.0.0.1", 9000)
    assert check_url("http://localhost/hook", "x") == ("localhost", 80)
    assert check_url("https://hooks.slack.com/services/T/B/x", "x") == ("hooks.slack.com", 443)


def test_the_platforms_own_endpoints_are_not_receivers() -> None:
    own = (("127.0.0.1", 7878), ("127.0.0.1", 2019))
    with pytest.raises(UsageError, match="one of the platform's own endpoints"):
        refuse_platform_endpoint("localhost", 2019, own, "the webhook channel")
    with pytest.raises(UsageError):
        refuse_platform_endpoint("127.0.0.2", 7878, own, "the webhook channel")
    refuse_platform_endpoint("127.0.0.1", 9000, own, "the webhook channel")


def test_a_url_is_shown_without_the_token_in_its_path() -> None:
    assert shown("slack", "https://hooks.slack.com/services/T0/B0/abc") == (
        "https://hooks.slack.com/…"
    )
    assert shown("webhook", "https://example.com/?token=abc") == "https://example.com/…"
    assert shown("webhook", "https://ntfy.sh/our-secret-topic") == "https://ntfy.sh/…"
    assert shown("discord", "https://discord.com/api/webhooks/1/tok") == "https://discord.com/…"
    assert shown("email", "ops@example.com") == "ops@example.com"
