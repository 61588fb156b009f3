"""The provider quota guard: stay under a provider's own limit instead of finding it by 429s.

A shared calls-per-period budget per provider (``resilience_providers``), taken before
each call by every worker on every host. A spent budget names the wait; the caller
retries then, without calling the provider and without counting a failure. When the
provider answers 429 anyway (another client shares the key, its window differs), the
budget is drained for the wait the provider named, or for the rest of the period.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping

from .bucket import BucketSpec, Decision
from .errors import StoreUnavailable
from .rates import Rate
from .store import Store
from .store.base import AdmitPolicy, AdmitRequest

__all__ = ["ProviderQuota", "PROVIDER_METRICS"]

logger = logging.getLogger("celery_resilience.quota")

PROVIDER_METRICS = "provider"


class ProviderQuota:
    def __init__(self, providers: Mapping[str, Rate], store: Callable[[], Store]) -> None:
        self.providers = dict(providers)
        self.stats: Counter[str] = Counter()
        self._store = store
        self._policies = {name: self._policy(name, rate) for name, rate in self.providers.items()}

    @staticmethod
    def _policy(name: str, rate: Rate) -> AdmitPolicy:
        spec = BucketSpec(
            capacity=rate.count,
            refill=rate.per_second,
            grace_limit=0,
            grace_period=rate.period,
            grace_allowed=False,
        )
        return AdmitPolicy(spec, tier=name, strategy="reject_with_backoff")

    def take(self, provider: str) -> float:
        """One call's worth of the provider's budget: 0.0 when granted, else seconds to wait.
        With the store unreachable the call is granted (the breaker still guards it)."""
        policy = self._policies[provider]
        store = self._store()
        key, shard = store.keys.provider(provider)
        try:
            outcome = store.admit(AdmitRequest(key, shard, policy, metrics_scope=PROVIDER_METRICS))
        except StoreUnavailable as error:
            self.stats["store_unavailable"] += 1
            logger.warning("provider quota for %r unchecked: %s", provider, error)
            return 0.0
        if outcome.decision is Decision.THROTTLE:
            self.stats["waits"] += 1
            return outcome.retry_after
        return 0.0

    def drain(self, provider: str, seconds: float | None) -> None:
        """The provider said 429: spend the budget for ``seconds`` (default: one period)."""
        policy = self._policies[provider]
        store = self._store()
        key, _ = store.keys.provider(provider)
        wait = seconds if seconds is not None and seconds > 0 else self.providers[provider].period
        try:
            store.drain(key, policy.spec, wait)
            store.count({f"provider_429:{provider}": 1}, store.keys.provider(provider)[1])
        except StoreUnavailable as error:
            self.stats["store_unavailable"] += 1
            logger.warning("could not drain the quota of %r: %s", provider, error)
