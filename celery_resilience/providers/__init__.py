"""Provider budgets: stay under an AI provider's own limits, in requests and in tokens.

- ``budget``: the units and their buckets, pure; ``usage``: a call's tokens before
  (estimate) and after (the provider's ``usage``), and the rate-limit headers, pure;
- ``settings``: ``resilience_providers``, ``resilience_token_counter``;
- ``quota``: ``ProviderQuota``, reserve before a call, reconcile after, follow the
  provider's headers; ``hooks``: the HTTP client hooks that read every response;
  ``port``: what they need of the store.
"""

from .budget import ProviderBudget, UnitBudget
from .quota import ProviderQuota, Reservation

__all__ = ["ProviderBudget", "ProviderQuota", "Reservation", "UnitBudget"]
