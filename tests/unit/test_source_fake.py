"""FakeSource keeps the Source contract; a source that cannot poll says what to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import pytest

from stackyard import plugins
from stackyard.errors import UnsupportedError
from stackyard.source.fake import FakeSource
from stackyard.source.git import GitSource

from ..source_contract import FIRST_FILES, SourceContract

URL = "https://git.example.com/web.git"


@dataclass
class FakeUpstream:
    source: FakeSource
    url: str = URL

    def commit(self, files: Mapping[str, str | None], message: str) -> str:
        return self.source.commit(self.url, files, message=message)

    def tag(self, name: str, sha: str) -> None:
        self.source.tag(self.url, name, sha)

    def branch(self, name: str) -> None:
        self.source.remotes[self.url].branches[name] = self.tip()

    def delete_branch(self, name: str) -> None:
        self.source.delete_branch(self.url, name)

    def tip(self) -> str:
        return self.source.remotes[self.url].branches["main"]


class TestFakeSourceContract(SourceContract):
    @pytest.fixture
    def source(self) -> FakeSource:
        return FakeSource()

    @pytest.fixture
    def upstream(self, source: FakeSource) -> FakeUpstream:
        upstream = FakeUpstream(source)
        upstream.commit(FIRST_FILES, "First commit")
        return upstream


def test_registered_as_plugins() -> None:
    assert plugins.source("fake") is FakeSource
    assert plugins.source("git") is GitSource


def test_a_full_sha_the_cache_has_needs_no_fetch() -> None:
    source = FakeSource()
    sha = source.commit(URL, {"a": "1"})
    source.resolve("web", URL, None, "main")
    source.resolve("web", URL, sha, "main")
    assert source.syncs == [("web", URL)]


class NoPollSource(FakeSource):
    supports_head: ClassVar[bool] = False

    def head(self, url: str, branch: str) -> str | None:
        return super(FakeSource, self).head(url, branch)


def test_a_source_that_cannot_poll_says_to_turn_polling_off() -> None:
    with pytest.raises(UnsupportedError) as caught:
        NoPollSource().head(URL, "main")
    assert "cannot read a branch tip from a remote, which polling needs" in str(caught.value)
    assert "--poll 0" in (caught.value.hint or "")


class TestNoPollSourceContract(TestFakeSourceContract):
    """The contract holds for a source without polling: head refuses, the rest works."""

    @pytest.fixture
    def source(self) -> NoPollSource:
        return NoPollSource()
