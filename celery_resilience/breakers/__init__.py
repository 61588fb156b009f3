"""Circuit breakers shared by every worker, and error classification.

- ``machine``: the breaker state machine, pure; ``classification``: what an exception
  says about the dependency, pure;
- ``settings``: ``resilience_breakers``, error weights and rules;
- ``client``: ``Breakers``, breakers as a process sees them (cache, feed, local fallback);
  ``local``: breakers held in one process; ``port``: what they need of the store.
"""

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
]
