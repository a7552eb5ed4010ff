"""`FakeSecretStore`: the SecretStore seam in memory, for unit tests of what uses secrets.

It keeps sealed versions only, like the real store, so encryption and masking (in the base
class) run exactly as they do in the platform. It knows no stacks: any name is one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from threading import Lock
from typing import ClassVar

from stackyard.secrets.store import SealedVersion, SecretStore, SecretView
from stackyard.secrets.vault import Vault, new_key


@dataclass
class _Current:
    version: int
    updated_at: datetime


class FakeSecretStore(SecretStore):
    """Secrets of every stack in dictionaries; a fresh key unless a vault is given."""

    name: ClassVar[str] = "fake"

    def __init__(self, vault: Vault | None = None, *, platform_secrets: Iterable[str] = ()) -> None:
        super().__init__(vault or Vault(new_key), platform_secrets=platform_secrets)
        self._lock = Lock()
        # (stack, scope, name) -> the scope's current version; scope "" is every stage.
        self._current: dict[tuple[str, str, str], _Current] = {}
        self._versions: dict[str, list[SealedVersion]] = {}  # stack -> every version, in order

    def secrets(self, stack: str, *, stage: str | None = None) -> list[SecretView]:
        with self._lock:
            found = [
                _view(key, current)
                for key, current in self._current.items()
                if key[0] == stack and (stage is None or key[1] in ("", stage))
            ]
        return sorted(found, key=lambda view: (view.stage or "", view.name))

    def versions(self, stack: str, stage: str | None) -> dict[str, int]:
        scopes = ("",) if stage is None else ("", stage)
        with self._lock:
            found = [
                (scope, name, c.version)
                for (owner, scope, name), c in self._current.items()
                if owner == stack and scope in scopes
            ]
        return {name: version for _scope, name, version in sorted(found, key=_stage_last)}

    def _put(
        self,
        stack: str,
        stage: str | None,
        name: str,
        ciphertext: str,
        *,
        unchanged: Callable[[SealedVersion], bool],
    ) -> tuple[SecretView, bool]:
        key = (stack, stage or "", name)
        with self._lock:
            versions = self._versions.setdefault(stack, [])
            current = self._current.get(key)
            if current is not None:
                sealed = next(
                    v for v in versions if v.name == name and v.version == current.version
                )
                if unchanged(sealed):
                    return _view(key, current), False
            number = max((v.version for v in versions if v.name == name), default=0) + 1
            versions.append(SealedVersion(name, number, ciphertext))
            current = self._current[key] = _Current(number, datetime.now(UTC))
            return _view(key, current), True

    def _remove(self, stack: str, stage: str | None, name: str) -> SecretView | None:
        key = (stack, stage or "", name)
        with self._lock:
            current = self._current.pop(key, None)
        return None if current is None else _view(key, current)

    def _sealed(self, stack: str, versions: Mapping[str, int] | None) -> list[SealedVersion]:
        with self._lock:
            stored = list(self._versions.get(stack, []))
        if versions is None:
            return stored
        return [v for v in stored if versions.get(v.name) == v.version]

    def _drop(self, stack: str) -> None:
        with self._lock:
            self._versions.pop(stack, None)
            for key in [k for k in self._current if k[0] == stack]:
                del self._current[key]

    def at_rest(self) -> str:
        """Everything the fake holds, as text: what a test checks holds no plain value."""
        with self._lock:
            return repr((self._current, self._versions))


def _stage_last(entry: tuple[str, str, int]) -> tuple[bool, str]:
    scope, name, _version = entry
    return scope != "", name


def _view(key: tuple[str, str, str], current: _Current) -> SecretView:
    _stack, scope, name = key
    return SecretView(
        name=name, stage=scope or None, version=current.version, updated_at=current.updated_at
    )
