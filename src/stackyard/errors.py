"""The one exception hierarchy of Stackyard.

Adapters translate vendor errors at their boundary (``raise ... from exc``); the CLI
and API turn these into one clear line with a hint. Every error says whether the same
call may succeed later (``retryable``), so that a worker knows whether to try again.
"""

from __future__ import annotations


class StackyardError(Exception):
    """Base of every error Stackyard raises on purpose.

    ``hint`` says what the user can do next; the CLI prints it under the message.
    ``retryable`` says whether the same call may succeed later. Each class sets its
    default; an adapter that knows better about one failure passes ``retryable=``.
    An error that does not say otherwise may succeed later: callers that retry do so
    within a budget, and the classes that know a retry cannot help say so.
    """

    exit_code = 1
    retryable: bool = True

    def __init__(
        self, message: str, *, hint: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def with_hint(self) -> str:
        """The message and, when there is one, the hint in brackets: for text kept where no
        hint goes (a run's error, a step's message, a line of a deployment's log)."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(StackyardError):
    """Bad input from the user: an invalid file, flag or name. Exit status 2. Permanent."""

    exit_code = 2
    retryable = False


class ConfigError(UsageError):
    """A stackyard.yml or build spec that cannot be used, with where and why."""


class UnsupportedError(UsageError):
    """An adapter lacks an optional ability (a ``supports_*`` flag) that something needs."""


class NotFoundError(StackyardError):
    """A named object (stack, stage, build, release, image) does not exist. Permanent:
    asking again gives the same answer until someone creates it."""

    retryable = False


class ComponentError(StackyardError):
    """A component (engine, registry, router, store) is missing or failed. Retryable by
    default: a component that is down may come back; an adapter that knows it will not
    (a binary that is not installed) passes ``retryable=False``."""

    retryable = True


class RetryableError(StackyardError):
    """A transient failure: the same call may succeed later (5xx, 429, refused)."""

    retryable = True


class PermanentError(StackyardError):
    """A failure that will not go away by retrying: refused credentials (401), denied
    access (403), a request the other side rejected (other 4xx), data that is corrupt."""

    retryable = False


class OperationFailed(StackyardError):
    """What the caller asked for ran and failed for a reason it names (a release.yml that
    failed, a commit that could not be fetched): neither bad input nor the platform's own
    fault. The API answers 409 and the CLI prints the message as it is (exit 1)."""


class AccessDenied(PermanentError):
    """The caller is who they say, but may not do this (HTTP 403). ``permission`` names
    what it takes, e.g. ``deploy on hello`` or ``approvers of hello/prod``."""

    def __init__(self, message: str, *, permission: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.permission = permission


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the call that raised ``exc`` may help.

    A StackyardError says so itself. Any other exception is a failure nobody classified
    (a bug, an OS error): it counts as retryable, so a caller retries it within its budget.
    """
    if isinstance(exc, StackyardError):
        return exc.retryable
    return True


def require(adapter: object, ability: str, *, needed_for: str, hint: str) -> None:
    """Raise UnsupportedError unless ``adapter.supports_<ability>`` is true.

    Called where an optional ability is about to be used, so that the error names what
    was asked, which adapter cannot do it, and what to do instead.
    """
    if getattr(adapter, f"supports_{ability}", False):
        return
    name = getattr(adapter, "name", None)
    which = f"{type(adapter).__name__} ({name!r})" if name else type(adapter).__name__
    raise UnsupportedError(
        f"{which} cannot {needed_for}: it does not support {ability.replace('_', ' ')}",
        hint=hint,
    )
