"""The SecretStore contract against the in-memory fake and the SQL store (SQLite, no process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stackyard.errors import NotFoundError
from stackyard.secrets.fake import FakeSecretStore
from stackyard.secrets.sql import SqlSecretStore
from stackyard.secrets.vault import Vault, new_key
from stackyard.store.database import migrate, open_database, session_factory
from stackyard.store.models import Stack

from ..secret_store_contract import BLOG, PLATFORM_SECRET, SHOP, SecretStoreContract, SecretYard


class TestFakeSecretStoreContract(SecretStoreContract):
    @pytest.fixture
    def yard(self) -> SecretYard:
        store = FakeSecretStore(platform_secrets=[PLATFORM_SECRET])
        return SecretYard(store, store.at_rest)


class TestSqlSecretStoreContract(SecretStoreContract):
    @pytest.fixture
    def yard(self, tmp_path: Path) -> Iterator[SecretYard]:
        database = open_database(f"sqlite:///{tmp_path / 'state.db'}")
        migrate(database)
        sessions = session_factory(database)
        with sessions.begin() as session:
            for name in (SHOP, BLOG):
                session.add(Stack(name=name, repo=f"/srv/{name}", branch="main"))
        store = SqlSecretStore(sessions, Vault(new_key), platform_secrets=[PLATFORM_SECRET])

        def at_rest() -> str:
            # The database file and its write-ahead log: every byte SQLite keeps.
            files = sorted(tmp_path.glob("state.db*"))
            return "".join(path.read_bytes().decode("latin-1") for path in files)

        try:
            yield SecretYard(store, at_rest)
        finally:
            database.dispose()


def test_the_sql_store_refuses_a_stack_that_does_not_exist(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(database)
    store = SqlSecretStore(session_factory(database), Vault(new_key))
    try:
        with pytest.raises(NotFoundError, match="no stack named 'ghost'") as caught:
            store.set("ghost", "TOKEN", "value")
        assert "stackyard stacks create" in (caught.value.hint or "")
    finally:
        database.dispose()
