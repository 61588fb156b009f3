"""A fleet-wide retry budget per provider: retries stay under a share of first attempts.

When a provider fails, every worker retrying every task (and every SDK retrying every
call) multiplies the load on it just when it can least take it. The SRE book's answer is
a retry budget: over a sliding window, retries to a provider may number at most a share
(10 %) of the first attempts, plus a small allowance for quiet times. So an outage costs
about 1.1 provider calls per request, not ``max_retries`` of them.

The window is cut into slices; each slice counts first attempts and retries. First
attempts are counted in each process and sent in batches (at most every second, and with
every retry's question), so the count never costs a round trip of its own; each retry
asks the shared count, atomically, and is refused when the budget is spent: the request
then goes to its fallbacks (or fails) instead of to the provider again.
``store/lua/retry_budget.lua`` is the same arithmetic as ``retry_allowed``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..clock import Clock
from ..errors import StoreUnavailable

__all__ = ["RetryBudget", "RetryBudgetStore", "RetryBudgets", "retry_allowed", "window_slice"]

logger = logging.getLogger("celery_resilience.retry_budget")

# First attempts wait at most this long in a process before they are counted in the store.
FLUSH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """At most ``ratio`` of the first attempts in ``window`` seconds, plus ``minimum``."""

    ratio: float = 0.1
    window: float = 10.0
    minimum: int = 3
    slices: int = 10

    @property
    def slice_seconds(self) -> float:
        return self.window / self.slices


def window_slice(now: float, budget: RetryBudget) -> int:
    return math.floor(now / budget.slice_seconds)


def retry_allowed(counts: Mapping[int, tuple[float, float]], now: float, budget: RetryBudget) -> bool:
    """Whether one more retry fits: ``counts`` maps a slice to its (first attempts, retries);
    only the window's slices count."""
    current = window_slice(now, budget)
    firsts = retries = 0.0
    for index, (first, retry) in counts.items():
        if current - budget.slices < index <= current:
            firsts += first
            retries += retry
    return retries + 1 <= budget.minimum + budget.ratio * firsts


class RetryBudgetStore(Protocol):
    def retry_budget(self, provider: str, budget: RetryBudget, firsts: int, ask: bool) -> bool:
        """Count ``firsts`` first attempts; with ``ask``, take one retry if it fits (True)."""


class RetryBudgets:
    """The runtime side: first attempts counted locally, retries asked of the store."""

    def __init__(
        self, budget: RetryBudget | None, store: Callable[[], RetryBudgetStore], clock: Clock
    ) -> None:
        self.budget = budget
        self._store, self._clock = store, clock
        self._pending: dict[str, int] = {}
        self._flushed = clock.monotonic()
        self._lock = threading.Lock()

    def first_attempt(self, provider: str) -> None:
        """A call to ``provider`` that is not a retry is about to be made."""
        if self.budget is None:
            return
        with self._lock:
            self._pending[provider] = self._pending.get(provider, 0) + 1
            due = self._clock.monotonic() - self._flushed >= FLUSH_SECONDS
            pending = self._take_pending() if due else {}
        for name, firsts in pending.items():
            self._send(name, firsts, ask=False)

    def allow_retry(self, provider: str) -> bool:
        """Whether the fleet may send ``provider`` one more retry now; a store that cannot
        answer allows it (the breaker still guards the provider)."""
        if self.budget is None:
            return True
        with self._lock:
            firsts = self._pending.pop(provider, 0)
        return self._send(provider, firsts, ask=True)

    def _take_pending(self) -> dict[str, int]:
        pending, self._pending = self._pending, {}
        self._flushed = self._clock.monotonic()
        return pending

    def _send(self, provider: str, firsts: int, ask: bool) -> bool:
        assert self.budget is not None
        try:
            return self._store().retry_budget(provider, self.budget, firsts, ask)
        except StoreUnavailable as error:
            logger.warning("retry budget of %r unchecked: %s", provider, error)
            return True
