"""The provider quota guard: stay under a provider's own limit instead of finding it by 429s.

A shared calls-per-period budget per provider (``resilience_providers``), taken before
each call by every worker on every host. A spent budget names the wait; the caller
retries then, without calling the provider and without counting a failure. When the
provider answers 429 anyway (another client shares the key, its window differs), the
budget is drained for the wait the provider named, or for the rest of the period.

Providers count calls in their own sliding window, so the budget must keep *every*
window of the period within the count, not just the average. A bucket holding the whole
period's count lets twice the count through in the first period (the full bucket, then
its refill). So the budget is a bucket of a small ``burst`` (a tenth of the count by
default) refilled at ``(count - burst)`` per period: over any window of the period at
most ``burst + (count - burst) = count`` calls go out. The period is stretched by
``WINDOW_MARGIN`` so that calls admitted at the edges of a window and arriving a little
late or early (network, scheduling) still fall inside the provider's count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..admission.bucket import BucketSpec, Decision
from ..admission.port import AdmitPolicy, AdmitRequest
from ..errors import StoreUnavailable
from ..monitoring.counters import PROVIDER_SCOPE, count_provider_429
from ..rates import Rate
from .port import BudgetStore

__all__ = ["ProviderQuota", "ProviderBudget", "WINDOW_MARGIN", "default_burst"]

logger = logging.getLogger("celery_resilience.quota")

# Share by which the budget's period is stretched, for calls that reach the provider a
# little later or earlier than they were admitted.
WINDOW_MARGIN = 0.02


def default_burst(count: float) -> int:
    """A tenth of the period's count, at least one call, and always less than the count
    (a burst of the whole count would leave nothing to refill within the window)."""
    if count <= 1:
        return 1
    return max(1, min(math.ceil(count) - 1, math.ceil(count / 10)))


@dataclass(frozen=True, slots=True)
class ProviderBudget:
    """``rate`` calls per period, of which ``burst`` may go out at once."""

    rate: Rate
    burst: int

    def spec(self) -> BucketSpec:
        period = self.rate.period * (1.0 + WINDOW_MARGIN)
        # One call per period: the next is due a full (stretched) period after it.
        refill = (self.rate.count - self.burst if self.rate.count > self.burst else self.rate.count) / period
        return BucketSpec(
            capacity=self.burst,
            refill=refill,
            grace_limit=0,
            grace_period=self.rate.period,
            grace_allowed=False,
        )


class ProviderQuota:
    def __init__(self, providers: Mapping[str, ProviderBudget], store: Callable[[], BudgetStore]) -> None:
        self.providers = dict(providers)
        self._store = store
        self._policies = {
            name: AdmitPolicy(budget.spec(), tier=name, strategy="reject_with_backoff")
            for name, budget in self.providers.items()
        }

    def take(self, provider: str) -> float:
        """One call's worth of the provider's budget: 0.0 when granted, else seconds to wait.
        With the store unreachable the call is granted (the breaker still guards it)."""
        policy = self._policies[provider]
        store = self._store()
        key, shard = store.provider_bucket(provider)
        try:
            outcome = store.admit(AdmitRequest(key, shard, policy, metrics_scope=PROVIDER_SCOPE))
        except StoreUnavailable as error:
            logger.warning("provider quota for %r unchecked: %s", provider, error)
            return 0.0
        return outcome.retry_after if outcome.decision is Decision.THROTTLE else 0.0

    def drain(self, provider: str, seconds: float | None) -> None:
        """The provider said 429: spend the budget for ``seconds`` (default: one period)."""
        policy = self._policies[provider]
        store = self._store()
        key, shard = store.provider_bucket(provider)
        wait = seconds if seconds is not None and seconds > 0 else self.providers[provider].rate.period
        try:
            store.drain(key, policy.spec, wait)
            count_provider_429(lambda fields: store.count(fields, shard), provider)
        except StoreUnavailable as error:
            logger.warning("could not drain the quota of %r: %s", provider, error)
