"""The SecretStore contract, checked against every implementation (fake and sql).

A test module subclasses ``SecretStoreContract`` and provides a ``yard`` fixture: a store
whose stacks ``shop`` and ``blog`` exist, the platform secret it masks, and a way to read
everything it keeps at rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from stackyard.errors import NotFoundError, PermanentError
from stackyard.secrets.masking import MASK
from stackyard.secrets.store import SecretStore

PLATFORM_SECRET = "registry-password-0123"
SHOP, BLOG = "shop", "blog"


@dataclass
class SecretYard:
    store: SecretStore
    at_rest: Callable[[], str]  # every byte the implementation keeps, as text


class SecretStoreContract:
    """Behaviour every SecretStore must have; subclasses supply the ``yard`` fixture."""

    def test_a_set_secret_is_listed_without_its_value(self, yard: SecretYard) -> None:
        view, changed = yard.store.set(SHOP, "TOKEN", "t0ps3cret")
        assert changed
        assert (view.name, view.stage, view.version) == ("TOKEN", None, 1)
        [listed] = yard.store.secrets(SHOP)
        assert listed == view
        assert "t0ps3cret" not in listed.model_dump_json()

    def test_values_are_encrypted_at_rest(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "plain-value-one")
        yard.store.set(SHOP, "TOKEN", "plain-value-two", stage="prod")
        stored = yard.at_rest()
        assert "TOKEN" in stored  # the reader really sees what is stored
        assert "plain-value-one" not in stored
        assert "plain-value-two" not in stored

    def test_the_same_value_again_is_no_new_version(self, yard: SecretYard) -> None:
        first, _ = yard.store.set(SHOP, "TOKEN", "one")
        again, changed = yard.store.set(SHOP, "TOKEN", "one")
        assert not changed
        assert again.version == first.version == 1

    def test_a_new_value_is_a_new_version_and_resolves(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "one")
        view, changed = yard.store.set(SHOP, "TOKEN", "two")
        assert changed
        assert view.version == 2
        assert yard.store.versions(SHOP, None) == {"TOKEN": 2}
        assert yard.store.resolve(SHOP, {"TOKEN": 2}) == {"TOKEN": "two"}
        assert yard.store.resolve(SHOP, {"TOKEN": 1}) == {"TOKEN": "one"}  # kept for rollbacks

    def test_a_stage_gets_stack_wide_secrets_and_its_own_win(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "everywhere")
        yard.store.set(SHOP, "DB", "dev-db", stage="dev")
        prod, _ = yard.store.set(SHOP, "TOKEN", "prod-only", stage="prod")
        assert prod.version == 2  # versions count per name across scopes
        assert yard.store.versions(SHOP, None) == {"TOKEN": 1}
        assert yard.store.versions(SHOP, "dev") == {"TOKEN": 1, "DB": 1}
        assert yard.store.versions(SHOP, "prod") == {"TOKEN": 2}
        assert list(yard.store.versions(SHOP, "dev")) == ["TOKEN", "DB"]  # stack-wide first
        names = [(v.stage, v.name) for v in yard.store.secrets(SHOP)]
        assert names == [(None, "TOKEN"), ("dev", "DB"), ("prod", "TOKEN")]
        assert [(v.stage, v.name) for v in yard.store.secrets(SHOP, stage="dev")] == [
            (None, "TOKEN"),
            ("dev", "DB"),
        ]

    def test_unset_leaves_the_versions_for_rollbacks(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "one", stage="dev")
        removed = yard.store.unset(SHOP, "TOKEN", stage="dev")
        assert (removed.name, removed.stage, removed.version) == ("TOKEN", "dev", 1)
        assert yard.store.secrets(SHOP) == []
        assert yard.store.versions(SHOP, "dev") == {}
        assert yard.store.resolve(SHOP, {"TOKEN": 1}) == {"TOKEN": "one"}
        again, _ = yard.store.set(SHOP, "TOKEN", "one", stage="dev")
        assert again.version == 2  # a new version: the old one may still be pinned

    def test_unset_of_a_missing_secret_names_it_and_how_to_list(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "one")
        with pytest.raises(NotFoundError, match="stack shop has no secret TOKEN for stage dev"):
            yard.store.unset(SHOP, "TOKEN", stage="dev")
        with pytest.raises(NotFoundError, match="no secret OTHER for every stage") as caught:
            yard.store.unset(SHOP, "OTHER")
        assert caught.value.hint == "list them: stackyard secrets list shop"

    def test_a_version_that_is_not_stored_is_a_permanent_error(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "one")
        with pytest.raises(PermanentError, match="secret TOKEN version 7 of stack shop"):
            yard.store.resolve(SHOP, {"TOKEN": 7})
        assert yard.store.resolve(SHOP, {}) == {}

    def test_mask_values_hold_the_platform_secrets_and_every_value_ever(
        self, yard: SecretYard
    ) -> None:
        assert yard.store.mask_values(SHOP) == [PLATFORM_SECRET]
        yard.store.set(SHOP, "TOKEN", "one")
        yard.store.set(SHOP, "TOKEN", "two", stage="prod")
        yard.store.unset(SHOP, "TOKEN", stage="prod")
        assert yard.store.mask_values(SHOP) == [PLATFORM_SECRET, "one", "two"]
        yard.store.set(SHOP, "OTHER", "three")  # the cached list follows a change
        assert yard.store.mask_values(SHOP) == [PLATFORM_SECRET, "one", "two", "three"]

    def test_the_masker_masks_every_value_in_text(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "hunter2-secret")
        masker = yard.store.masker(SHOP)
        text = f"login {PLATFORM_SECRET} with hunter2-secret"
        assert masker.mask(text) == f"login {MASK} with {MASK}"

    def test_stacks_do_not_share_secrets(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "shop-token")
        yard.store.set(BLOG, "TOKEN", "blog-token")
        assert yard.store.versions(BLOG, None) == {"TOKEN": 1}
        assert yard.store.resolve(BLOG, {"TOKEN": 1}) == {"TOKEN": "blog-token"}
        assert "shop-token" not in yard.store.mask_values(BLOG)

    def test_forget_drops_every_secret_of_the_stack(self, yard: SecretYard) -> None:
        yard.store.set(SHOP, "TOKEN", "one")
        yard.store.set(BLOG, "TOKEN", "kept")
        yard.store.mask_values(SHOP)  # cached before the stack goes
        yard.store.forget(SHOP)
        assert yard.store.secrets(SHOP) == []
        assert yard.store.versions(SHOP, None) == {}
        assert yard.store.mask_values(SHOP) == [PLATFORM_SECRET]
        assert yard.store.resolve(BLOG, {"TOKEN": 1}) == {"TOKEN": "kept"}

    def test_a_platform_secret_is_sealed_opened_and_masked_everywhere(
        self, yard: SecretYard
    ) -> None:
        sealed = yard.store.seal_platform("outside-registry-pw-42")
        assert "outside-registry-pw-42" not in sealed
        assert "outside-registry-pw-42" in yard.store.mask_values(BLOG)
        assert yard.store.masker(SHOP).mask("pw=outside-registry-pw-42") == f"pw={MASK}"
        assert yard.store.open_platform(sealed, what="registry ghcr") == "outside-registry-pw-42"
