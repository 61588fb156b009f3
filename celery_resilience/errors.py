"""Exceptions callers and operators see.

::

    ResilienceError
     ├── ConfigurationError (also ValueError)   a resilience_* setting is wrong
     ├── Throttled                              admission refused; retry after .retry_after
     │    └── AdmissionUnavailable              the store is down and admission fails closed
     ├── CircuitOpen                            a breaker refused the call
     ├── FallbackExhausted                      no step of a fallback chain answered
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
    "FallbackExhausted",
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
    """Admission refused this request; the caller may try again after ``retry_after`` s.

    ``args`` are the constructor's arguments, so result backends that rebuild exceptions
    as ``cls(*args)`` (Celery's JSON serializer does) give callers the real type back.
    """

    def __init__(
        self,
        retry_after: float,
        task_name: str = "",
        user_id: str | None = None,
        tier: str = "",
        request_type: str = "",
        reason: str = "rate limit exceeded",
        factors: dict[str, float] | None = None,
    ):
        super().__init__(retry_after, task_name, user_id, tier, request_type, reason, factors)
        self.retry_after = retry_after
        self.task_name = task_name
        self.user_id = user_id
        self.tier = tier
        self.request_type = request_type
        self.reason = reason
        self.factors: dict[str, float] = dict(factors or {})
        """The adaptive factors that shrank the tier's limit (``{"resources": 0.3}``): empty
        when the caller was over the limit as configured."""
        self.answerable = False
        """Set by admission under the ``answer`` strategy: a task with a fallback chain
        answers the request from its cheap steps instead of raising this."""

    def __str__(self) -> str:
        who = f"user {self.user_id!r}" if self.user_id is not None else "anonymous caller"
        return (
            f"{self.task_name or 'task'} throttled for {who} (tier {self.tier!r}, request type "
            f"{self.request_type!r}): {self.reason}; retry after {self.retry_after:.3g}s"
        )


class AdmissionUnavailable(Throttled):
    """The store is unreachable and ``resilience_admission_on_store_failure`` is ``"closed"``."""


class CircuitOpen(ResilienceError):
    """The breaker of a dependency refused the call; ``retry_after`` is None when an
    operator forced it open."""

    def __init__(self, breaker: str, state: str, retry_after: float | None):
        super().__init__(breaker, state, retry_after)
        self.breaker = breaker
        self.state = state
        self.retry_after = retry_after

    def __str__(self) -> str:
        when = (
            "until an operator closes it"
            if self.retry_after is None
            else f"retry after {self.retry_after:.3g}s"
        )
        return f"breaker {self.breaker!r} is {self.state}: {when}"


class FallbackExhausted(ResilienceError):
    """Every step of a fallback chain failed or was skipped; ``attempts`` says each and why."""

    def __init__(self, task: str, reason: str, attempts: list[dict[str, str]]):
        super().__init__(task, reason, attempts)
        self.task = task
        self.reason = reason
        self.attempts = attempts

    def __str__(self) -> str:
        steps = "; ".join(f"{a['step']}: {a['error']}" for a in self.attempts) or "no steps configured"
        return f"{self.task} failed ({self.reason}) and no fallback answered: {steps}"


class StoreUnavailable(ResilienceError):
    """The shared store did not answer within its timeout."""
