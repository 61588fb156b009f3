"""What the provider budget needs of the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..admission.bucket import BucketSpec
from .budget import Said, Taken, Window
from .retry_budget import RetryBudget

__all__ = ["ProviderStore"]


class ProviderStore(Protocol):
    def provider_windows(self, provider: str, units: tuple[str, ...]) -> tuple[list[str], int]:
        """The keys of a provider's unit windows (two per unit), and their shard."""

    def provider_timetable(self, provider: str, units: tuple[str, ...]) -> list[str]:
        """The keys of the buckets queued calls book their turn on (one shard with the units)."""

    def budget_take(
        self,
        keys: Sequence[str],
        shard: int,
        windows: Sequence[Window],
        amounts: Sequence[float],
        provider: str,
        entry: str,
        watch: bool = False,
    ) -> Taken:
        """Reserve every amount under ``entry`` or none (``budget.take_all``), counted as
        the provider's call admitted or throttled."""

    def budget_settle(
        self,
        keys: Sequence[str],
        windows: Sequence[Window],
        entry: str,
        said: Sequence[Said],
        timetable: Sequence[str],
        specs: Sequence[BucketSpec],
        deltas: Sequence[float],
    ) -> None:
        """In one round trip: per window ``i``, set ``entry`` to what the provider counted
        (``budget.settle``) and hold the window to what it says is left (``budget.hold_to``);
        give ``deltas[j]`` back to timetable bucket ``j`` (``budget.adjust``)."""

    def budget_block(
        self,
        keys: Sequence[str],
        windows: Sequence[Window],
        seconds: Sequence[float],
        again: float | None = None,
        periods: Sequence[float] | None = None,
    ) -> list[tuple[float, float]]:
        """Nothing fits window ``i`` for ``seconds[i]`` (``budget.block``); what each window
        held of the provider's last ``periods[i]``, and the limit it shows when the provider
        takes a call again, in ``again`` seconds."""

    def budget_schedule(
        self,
        provider: str,
        units: tuple[str, ...],
        specs: Sequence[BucketSpec],
        amounts: Sequence[float],
        horizon: float,
    ) -> tuple[bool, float]:
        """Book a queued call on the provider's timetable (``budget.schedule``): whether it
        was booked, and the wait until its turn."""

    def retry_budget(self, provider: str, budget: RetryBudget, firsts: int, ask: bool) -> bool:
        """Count ``firsts`` first attempts; with ``ask``, take one retry if it fits (True)."""

    def learn(
        self,
        provider: str,
        unit: str,
        event: str,
        start: float,
        value: float,
        accepted: float = 0.0,
        held: float = 0.0,
    ) -> float:
        """Apply ``event`` to the provider's learned unit (``learned.learned``); its rate now."""

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        """Add to the current minute's metric counters."""
