"""Tenants' fair shares of a provider budget, while it is saturated.

A budget every worker draws from is a queue of its own. When calls come faster than it
refills, they wait for it in the workers (each runs again after the wait the budget
names), and whichever comes back first takes what is free: the provider's answers go to
tenants in proportion to what they send, and a tenant sending ten times the others'
work takes ten times their answers. The broker's queue meanwhile stays short (work is
taken at once and waits on the budget), so a fair queue (``load/fairness.py``) never
sees it stand.

A budget named in ``resilience_fair_providers`` gives tenants their turns by start-time
fair queueing on a virtual clock run at the budget's own rate (its calls a second, known
from its units, not reported by workers; ``turns.py``): when a call first reaches a
worker while the budget is saturated, it books its tenant's turn. A turn now
takes the budget as before; a turn later waits for it (the task runs again then); a turn
further off than the call may wait (what is left of ``quota_wait_limit``, for a task
with a fallback chain) is not booked, and the call goes to its chain at once: its tenant
is not charged for it, and the budget is left to the tenants within their share. A
tenant is charged what the call reserves (its tokens, for a budget counting tokens, as
VTC charges an LLM's tenants; else one call), in its tier's ``weight``.

Saturated: in this process, within the last ``HELD_BACK_SECONDS``, a call waited for
the budget, or found it spent faster than its rate (more than a quarter of its count in
the last quarter of its period, ``budget.running_ahead``: a flood is seen while the
window still has room to share, not once it is full and every tenant must wait for it
to empty); or a call waits for its turn. A burst below that share passes as the window
allows, and with spare budget nobody books a turn (no round trip, no wait). A prefork
child with few calls may see the saturation late; its calls then go straight to the
budget, as without fair shares, until one waits. A store that does not answer leaves the
budget first come, first served.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import NamedTuple

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import StoreUnavailable
from ..load.port import FairStore
from .quota import HELD_BACK_SECONDS, ProviderQuota

__all__ = ["FairShares", "Turn", "KIND"]

logger = logging.getLogger("celery_resilience.fair_share")

# The store keeps a budget's tenants apart from any queue's of the same name.
KIND = "provider"
# The longest wait for a turn booked by a call that can wait any time (no chain, or no
# ``quota_wait_limit``): it runs again then, and waits for the budget if still spent.
LONGEST_WAIT = 3600.0


class Turn(NamedTuple):
    wait: float
    """Seconds until the tenant's turn (0: now)."""
    booked: bool
    """False: the turn was further off than the call may wait; nothing was booked."""


class FairShares:
    """The fair shares of the budgets named in ``resilience_fair_providers``."""

    def __init__(
        self,
        providers: Collection[str],
        store: Callable[[], FairStore],
        quota: ProviderQuota,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.providers = frozenset(providers)
        self._store, self._quota, self._monotonic = store, quota, clock.monotonic
        self._until: dict[str, float] = {}  # provider -> when this process's last turn is due
        self._lock = threading.Lock()

    def saturated(self, provider: str) -> bool:
        """Whether calls to ``provider`` book their tenant's turn now."""
        if provider not in self.providers:
            return False
        quota = self._quota
        if quota.holding_back(provider) or quota.running_ahead(provider):
            return True
        return self._monotonic() < self._until.get(provider, -1.0)

    def turn(
        self,
        provider: str,
        tenant: str | None,
        weight: float,
        cost: Callable[[], float],
        within: float | None,
    ) -> Turn | None:
        """Book the tenant's turn for one call (``cost`` is asked only when one is booked);
        None when the budget is not saturated, its rate is not known yet, or the store
        did not answer: the budget alone decides."""
        if not self.saturated(provider):
            return None
        capacity = self._quota.calls_per_second(provider)
        if capacity <= 0:
            return None
        longest = LONGEST_WAIT if within is None else max(within, 0.0)
        lead, lead_for = self._quota.lead(provider)
        try:
            tag = self._store().fair_tag(
                provider,
                tenant,
                weight,
                cost(),
                longest,
                capacity,
                within=longest,
                kind=KIND,
                lead=lead,
                lead_for=lead_for,
            )
        except StoreUnavailable as error:
            logger.debug("fair share of %r skipped, the store did not answer: %s", provider, error)
            return None
        if tag.delay > 0 or not tag.booked:
            # Still saturated while this turn is ahead, or while a tenant is over its share.
            until = self._monotonic() + (tag.delay if tag.booked else HELD_BACK_SECONDS)
            with self._lock:
                self._until[provider] = max(until, self._until.get(provider, -1.0))
        return Turn(tag.delay, tag.booked)
