"""Circuit breakers shared by every worker, error classification and provider budgets.

- ``machine``: the breaker state machine, pure; ``classification``: what an exception
  says about the dependency, pure;
- ``settings``: ``resilience_breakers``, error weights and rules, ``resilience_providers``;
- ``client``: ``Breakers``, breakers as a process sees them (cache, feed, local fallback);
  ``local``: breakers held in one process;
- ``budget``: the provider budget; ``port``: what they need of the store.
"""

from .budget import ProviderBudget, ProviderQuota
from .classification import Category, Classification, classify
from .client import Breakers, Call
from .machine import BreakerPolicy, BreakerState

__all__ = [
    "Breakers",
    "Call",
    "BreakerPolicy",
    "BreakerState",
    "Category",
    "Classification",
    "classify",
    "ProviderBudget",
    "ProviderQuota",
]
