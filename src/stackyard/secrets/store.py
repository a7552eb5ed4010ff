"""The SecretStore seam: secrets encrypted at rest, write-only through the API, masked in logs.

This base class does what every implementation must do the same way: it encrypts a value
before an implementation stores it and decrypts only for a build, a release or a task; it
lists every value a stack's logs must mask (the platform's own secrets included); and it
makes the one masker those logs use. An implementation only keeps sealed (encrypted)
versions: ``sql.py`` in the platform's database, ``fake.py`` in memory for unit tests. Both
pass the contract suite in tests/secret_store_contract.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from threading import Lock
from typing import ClassVar

from pydantic import BaseModel

from stackyard.errors import NotFoundError, PermanentError
from stackyard.secrets.masking import SecretMasker
from stackyard.secrets.vault import Vault


class SecretView(BaseModel):
    """A secret as the API shows it: never its value."""

    name: str
    stage: str | None  # None: every stage
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class SealedVersion:
    """One stored version of a secret: its value only as ciphertext."""

    name: str
    version: int
    ciphertext: str


class SecretStore(ABC):
    """A stack's secrets by name and scope (every stage, or one), versioned.

    Versions count per stack and name across scopes, so (name, version) names one value;
    a release pins versions, and old versions stay (unset included) so a rollback can bring
    one back. Nothing here returns a value to the API: ``resolve`` is for what the platform
    starts (builds, releases, tasks), and ``mask_values`` for the logs it writes.
    """

    name: ClassVar[str]

    def __init__(self, vault: Vault, *, platform_secrets: Iterable[str] = ()) -> None:
        self._vault = vault
        # Values every log masks whatever the stack, e.g. the registry password.
        self._platform_secrets = [value for value in platform_secrets if value]
        self._masks: dict[str, list[str]] = {}
        self._masks_lock = Lock()

    # -- the API's face: write, list, remove; never read a value back

    def set(
        self, stack: str, name: str, value: str, *, stage: str | None = None
    ) -> tuple[SecretView, bool]:
        """Store ``value`` as a new version, unless it is the current one: (view, changed)."""
        view, changed = self._put(
            stack,
            stage,
            name,
            self._vault.encrypt(value),
            unchanged=lambda current: self._open(stack, name, current) == value,
        )
        if changed:
            self._forget_masks(stack)
        return view, changed

    def unset(self, stack: str, name: str, *, stage: str | None = None) -> SecretView:
        """Remove the secret from its scope; its versions stay for rollbacks."""
        removed = self._remove(stack, stage, name)
        if removed is None:
            scope = f"stage {stage}" if stage else "every stage"
            raise NotFoundError(
                f"stack {stack} has no secret {name} for {scope}",
                hint=f"list them: stackyard secrets list {stack}"
                + (f" --stage {stage}" if stage else ""),
            )
        return removed

    @abstractmethod
    def secrets(self, stack: str, *, stage: str | None = None) -> list[SecretView]:
        """Every secret of the stack, or those that reach ``stage``; by scope, then name."""

    def forget(self, stack: str) -> None:
        """The stack was deleted: drop its secrets, every version, and what is cached."""
        self._drop(stack)
        self._forget_masks(stack)

    # -- what builds, releases and tasks get

    @abstractmethod
    def versions(self, stack: str, stage: str | None) -> dict[str, int]:
        """name -> current version of the secrets ``stage`` gets: the stack-wide ones, then
        the stage's own (which win). With ``stage`` None, the stack-wide ones only."""

    def resolve(self, stack: str, versions: Mapping[str, int]) -> dict[str, str]:
        """name -> decrypted value, for the versions a release snapshot (or a build) names."""
        if not versions:
            return {}
        sealed = {(v.name, v.version): v for v in self._sealed(stack, versions)}
        values = {}
        for name, version in versions.items():
            found = sealed.get((name, version))
            if found is None:
                raise PermanentError(
                    f"secret {name} version {version} of stack {stack} is not stored",
                    hint=f"set it again: stackyard secrets set {stack} {name}",
                )
            values[name] = self._open(stack, name, found)
        return values

    # -- platform secrets: a value a platform record keeps sealed (an outside registry's
    #    password), masked in every stack's logs

    def seal_platform(self, value: str) -> str:
        """``value`` encrypted for a platform record to store; every log masks it from now."""
        self.mask_everywhere(value)
        return self._vault.encrypt(value)

    def open_platform(self, ciphertext: str, *, what: str) -> str:
        """A value ``seal_platform`` sealed, for the platform to use (never to show);
        masked in every log from now, so a restart masks it again on first use."""
        value = self._vault.decrypt(ciphertext, what=what)
        self.mask_everywhere(value)
        return value

    def mask_everywhere(self, value: str) -> None:
        """Mask ``value`` in the logs of every stack, as the platform's own secrets are."""
        with self._masks_lock:
            if value and value not in self._platform_secrets:
                self._platform_secrets.append(value)

    # -- masking: the one list of values, and the one masker

    def mask_values(self, stack: str) -> list[str]:
        """Every value to mask in the stack's logs: the platform's own secrets, then every
        value any secret of the stack ever had (a rollback may bring an old one back)."""
        with self._masks_lock:
            cached = self._masks.get(stack)
        if cached is None:
            cached = [self._open(stack, v.name, v) for v in self._sealed(stack, None)]
            with self._masks_lock:
                self._masks[stack] = cached
        with self._masks_lock:
            platform = list(self._platform_secrets)
        return [*platform, *cached]

    def masker(self, stack: str) -> SecretMasker:
        """A masker for one piece of the stack's output (a log, a stream of task lines)."""
        return SecretMasker(self.mask_values(stack))

    # -- other secrets the platform keeps in its own records, sealed with the same key
    # (a notification channel's webhook URL, SMTP password and signing secret)

    def seal(self, value: str) -> str:
        """``value`` encrypted, for a record that is not a stack's secret."""
        return self._vault.encrypt(value)

    def unseal(self, sealed: str, *, what: str) -> str:
        """What ``seal`` was given; ``what`` names it in the error when the key changed."""
        return self._vault.decrypt(sealed, what=what)

    # -- what an implementation stores: sealed versions only

    @abstractmethod
    def _put(
        self,
        stack: str,
        stage: str | None,
        name: str,
        ciphertext: str,
        *,
        unchanged: Callable[[SealedVersion], bool],
    ) -> tuple[SecretView, bool]:
        """In one step: if the scope's current version is ``unchanged``, return it with
        False; else store ``ciphertext`` as the name's next version, make it the scope's
        current one, and return it with True."""

    @abstractmethod
    def _remove(self, stack: str, stage: str | None, name: str) -> SecretView | None:
        """Remove the secret from its scope (versions stay); None when it has none there."""

    @abstractmethod
    def _sealed(self, stack: str, versions: Mapping[str, int] | None) -> list[SealedVersion]:
        """The stored versions named in ``versions`` (those missing are left out), or with
        None, every version the stack's secrets ever had."""

    @abstractmethod
    def _drop(self, stack: str) -> None:
        """Delete everything stored for the stack."""

    # -- helpers

    def _open(self, stack: str, name: str, sealed: SealedVersion) -> str:
        return self._vault.decrypt(
            sealed.ciphertext, what=f"secret {name} v{sealed.version} of stack {stack}"
        )

    def _forget_masks(self, stack: str) -> None:
        with self._masks_lock:
            self._masks.pop(stack, None)
