"""What the provider budget needs of the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..admission.bucket import BucketSpec
from .retry_budget import RetryBudget

__all__ = ["ProviderStore"]


class ProviderStore(Protocol):
    def provider_units(self, provider: str, units: tuple[str, ...]) -> tuple[list[str], int]:
        """The keys of a provider's unit buckets, and their shard."""

    def provider_timetable(self, provider: str, units: tuple[str, ...]) -> list[str]:
        """The keys of the buckets queued calls book their turn on (one shard with the units)."""

    def budget_take(
        self,
        keys: Sequence[str],
        shard: int,
        specs: Sequence[BucketSpec],
        amounts: Sequence[float],
        provider: str,
    ) -> float:
        """Take every amount or none (``budget.take_all``), counted as the provider's call
        admitted or throttled; 0.0 when taken, else seconds until all would fit."""

    def budget_adjust(
        self, keys: Sequence[str], specs: Sequence[BucketSpec], deltas: Sequence[float]
    ) -> None:
        """Give ``deltas[i]`` back to bucket ``i``, or take it when negative (``budget.adjust``)."""

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

    def budget_cap(self, keys: Sequence[str], specs: Sequence[BucketSpec], most: Sequence[float]) -> None:
        """Hold no more than ``most[i]`` in bucket ``i``: what the provider says is left."""

    def retry_budget(self, provider: str, budget: RetryBudget, firsts: int, ask: bool) -> bool:
        """Count ``firsts`` first attempts; with ``ask``, take one retry if it fits (True)."""

    def learn(self, provider: str, unit: str, event: str, start: float, value: float) -> float:
        """Apply ``event`` to the provider's learned unit (``learned.learned``); its rate now."""

    def drain(self, bucket_key: str, spec: BucketSpec, seconds: float) -> None:
        """Empty a bucket so that its next unit is due in ``seconds``."""

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        """Add to the current minute's metric counters."""
