"""Where an outside registry is, from the URL ``registries add --url`` takes."""

from __future__ import annotations

import pytest

from stackyard.errors import UsageError
from stackyard.platform.registries import RegistryAddress, parse_url


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("ghcr.io/acme", RegistryAddress(None, "ghcr.io", "acme")),
        ("127.0.0.1:5001", RegistryAddress(None, "127.0.0.1:5001", "")),
        ("https://harbor.example.com/team/apps/",
         RegistryAddress("https", "harbor.example.com", "team/apps")),
        ("http://10.0.0.5:5000", RegistryAddress("http", "10.0.0.5:5000", "")),
    ],
)  # fmt: skip
def test_a_url_is_an_endpoint_and_a_namespace(url: str, address: RegistryAddress) -> None:
    assert parse_url(url) == address


def test_stack_repositories_go_under_the_namespace() -> None:
    assert parse_url("ghcr.io/acme").repository("hello") == "acme/hello"
    assert parse_url("127.0.0.1:5001").repository("hello") == "hello"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://ghcr.io/acme", "scheme 'ftp' is not http or https"),
        ("not a host/acme", "is not a host[:port]"),
        ("ghcr.io/Acme", "namespace 'Acme' is not a repository path"),
        ("", "is not a host[:port]"),
    ],
)
def test_a_bad_url_is_refused_saying_why(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_url(url)
