"""The one exception hierarchy of Stackyard.

Adapters translate vendor errors at their boundary (``raise ... from exc``); the CLI
and API turn these into one clear line with a hint. Retryable and permanent failures
are different types so that a worker knows whether to try again.
"""

from __future__ import annotations


class StackyardError(Exception):
    """Base of every error Stackyard raises on purpose.

    ``hint`` says what the user can do next; the CLI prints it under the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(StackyardError):
    """Bad input from the user: an invalid file, flag or name. Exit status 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A stackyard.yml or build spec that cannot be used, with where and why."""


class NotFoundError(StackyardError):
    """A named object (stack, stage, build, release, image) does not exist."""


class ComponentError(StackyardError):
    """A component (engine, registry, router, store) is missing or failed."""


class RetryableError(StackyardError):
    """A transient failure: the same call may succeed later (5xx, 429, refused)."""


class PermanentError(StackyardError):
    """A failure that will not go away by retrying (401, 404, bad input)."""
