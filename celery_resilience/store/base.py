"""The ``Store``: every capability's port, implemented once per backend.

Two implementations keep the same semantics: ``MemoryStore`` for one process (demos,
quick starts, tests of user code) and ``RedisStore`` for many workers on many hosts.
Each capability declares the narrow interface it needs (its ``port``); a store is all of
them, plus what the composition root needs to manage it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..admission.port import AdmissionStore
from ..breakers.port import BreakerStore
from ..clock import SYSTEM_CLOCK, Clock
from ..fallbacks.port import CacheStore
from ..load.port import FairStore, LoadStore
from ..monitoring.port import SECONDS_PER_MINUTE, MonitoringStore
from ..providers.port import ProviderStore

__all__ = ["Store", "MinuteClock", "Call"]

# ``RedisStore._call``: runs a redis call, every redis error surfacing as ``StoreUnavailable``.
Call = Callable[..., Any]


@runtime_checkable
class Store(
    AdmissionStore, ProviderStore, BreakerStore, CacheStore, LoadStore, FairStore, MonitoringStore, Protocol
):
    def purge(self) -> int:
        """Delete every key of this store's key space; returns how many were deleted."""

    def close(self) -> None:
        """Release connections."""


class MinuteClock:
    """Tracks the store's clock from the times its answers carry, with no extra round trip."""

    def __init__(self, local: Clock = SYSTEM_CLOCK) -> None:
        self._local = local
        self._offset = 0.0
        self._observed_at = -1e18

    def observe(self, store_now: float) -> None:
        local = self._local.now()
        self._offset = store_now - local
        self._observed_at = local

    def fresh(self, within: float) -> bool:
        """Whether an answer of the store set the offset less than ``within`` seconds ago."""
        return self._local.now() - self._observed_at < within

    def now(self) -> float:
        return self._local.now() + self._offset

    def minute(self) -> int:
        return int(self.now() // SECONDS_PER_MINUTE)
