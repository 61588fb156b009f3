"""Exceptions callers and operators see.

::

    ResilienceError
     ├── ConfigurationError (also ValueError)   a resilience_* setting is wrong
     ├── Throttled                              admission refused; retry after .retry_after
     │    └── AdmissionUnavailable              the store is down and admission fails closed
     ├── CircuitOpen                            a breaker refused the call
     └── StoreUnavailable                       the shared store cannot be reached
"""

from __future__ import annotations

__all__ = [
    "ResilienceError",
    "ConfigurationError",
    "Throttled",
    "AdmissionUnavailable",
    "StoreUnavailable",
    "CircuitOpen",
]


class ResilienceError(Exception):
    """Base of every exception the plugin raises on purpose."""


class ConfigurationError(ResilienceError, ValueError):
    """A setting is wrong; the message names it and says what was expected."""

    def __init__(self, setting: str, expected: str, got: object = None, *, has_value: bool = True):
        self.setting = setting
        self.expected = expected
        message = f"{setting}: expected {expected}"
        if has_value:
            message += f", got {got!r}"
        super().__init__(message)


class Throttled(ResilienceError):
    """Admission refused this request; the caller may try again after ``retry_after`` s."""

    def __init__(
        self,
        retry_after: float,
        *,
        task_name: str = "",
        user_id: str | None = None,
        tier: str = "",
        request_type: str = "",
        reason: str = "rate limit exceeded",
    ):
        self.retry_after = retry_after
        self.task_name = task_name
        self.user_id = user_id
        self.tier = tier
        self.request_type = request_type
        self.reason = reason
        who = f"user {user_id!r}" if user_id is not None else "anonymous caller"
        super().__init__(
            f"{task_name or 'task'} throttled for {who} (tier {tier!r}, request type "
            f"{request_type!r}): {reason}; retry after {retry_after:.3g}s"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only state must survive pickling (result backends, multiprocessing).
        return (_rebuild_throttled, (type(self), str(self), self.__dict__.copy()))


def _rebuild_throttled(cls: type[Throttled], message: str, state: dict[str, object]) -> Throttled:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class AdmissionUnavailable(Throttled):
    """The store is unreachable and ``resilience_admission_on_store_failure`` is ``"closed"``."""


class CircuitOpen(ResilienceError):
    """The breaker of a dependency refused the call; ``retry_after`` is None when an
    operator forced it open."""

    def __init__(self, breaker: str, state: str, retry_after: float | None):
        self.breaker = breaker
        self.state = state
        self.retry_after = retry_after
        when = "until an operator closes it" if retry_after is None else f"retry after {retry_after:.3g}s"
        super().__init__(f"breaker {breaker!r} is {state}: {when}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.breaker, self.state, self.retry_after))


class StoreUnavailable(ResilienceError):
    """The shared store did not answer within its timeout."""
