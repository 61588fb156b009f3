"""``AITask``: a ``ResilientTask`` whose calls to one dependency go through its breaker.

On the worker, each run:
1. takes one call from the provider's quota (``resilience_providers``); a spent budget
   runs the task again after the wait it names, without calling the provider, counting
   a failure or using up ``max_retries``;
2. asks the breaker (``resilience_breakers[breaker]``) for a permit; an open breaker
   fails the task at once with ``CircuitOpen``;
3. runs the task, classifies any exception, records the outcome (a call that overran
   ``call_timeout`` counts as a timeout), drains the provider's quota on a 429, and
   retries retryable failures (timeouts, connection errors, rate limits, overload) after
   the provider's ``Retry-After`` or an exponential back-off, up to ``max_retries``.

The task's retry policy is the one retry loop: turn the provider SDK's own retries off
inside an ``AITask`` (``max_retries=0`` on the OpenAI and Anthropic clients), or every
failure is retried by both and the breaker sees a fraction of them.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import Ignore

from .classify import Category
from .errors import CircuitOpen
from .extension import Resilience
from .task import ResilientTask

__all__ = ["AITask"]


class AITask(ResilientTask):
    """Set ``breaker = "<dependency>"`` (and optionally ``provider``) on the task."""

    breaker: str | None = None
    provider: str | None = None
    retry_backoff: float = 2.0
    retry_backoff_max: float = 300.0

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        if self.breaker is not None and self.soft_time_limit is None and "soft_time_limit" not in options:
            policy = Resilience.of(self.app).breakers.policies.get(self.breaker)
            if policy is not None and policy.call_timeout is not None:
                # Enforced by pools that support time limits; every pool counts overruns.
                options["soft_time_limit"] = policy.call_timeout
        return super().apply_async(args, kwargs, *rest, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.breaker is None:
            return super().__call__(*args, **kwargs)
        resilience = Resilience.of(self.app)
        provider = self.provider or (self.breaker if self.breaker in resilience.quota.providers else None)
        if provider is not None:
            wait = resilience.quota.take(provider)
            if wait > 0:
                self._wait_for_quota(wait)
        call = resilience.breakers.acquire(self.breaker)
        try:
            result = super().__call__(*args, **kwargs)
        except CircuitOpen:
            raise
        except BaseException as error:
            resilience.breakers.record(call, error)
            outcome = call.outcome
            if outcome is None:
                raise
            if provider is not None and outcome.category in (Category.RATE_LIMIT, Category.QUOTA_EXHAUSTED):
                resilience.quota.drain(provider, outcome.retry_after)
            if outcome.retryable and isinstance(error, Exception) and not self.request.called_directly:
                backoff = min(self.retry_backoff_max, self.retry_backoff ** (self.request.retries + 1))
                countdown = outcome.retry_after if outcome.retry_after is not None else backoff
                raise self.retry(exc=error, countdown=countdown) from error
            raise
        resilience.breakers.record(call, None)
        return result

    def _wait_for_quota(self, wait: float) -> None:
        """Run again once the budget has refilled: the same request under the same task id,
        with its retry count unchanged (a spent budget is neither a failure nor a retry)."""
        if self.request.is_eager:
            raise self.retry(countdown=wait, max_retries=self.request.retries + 1)
        self.signature_from_request(countdown=wait).apply_async()
        raise Ignore()
