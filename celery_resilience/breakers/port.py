"""What breakers need of the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from .machine import BreakerPolicy, BreakerState, BreakerView, Denied, Permit, Recorded

__all__ = ["BreakerStore", "BreakerOutcome", "TransitionListener"]

TransitionListener = Callable[["str | None", "BreakerView | None"], None]


@dataclass(frozen=True, slots=True)
class BreakerOutcome:
    """One call's result for ``breaker_record``; ``jitter_draw`` in [0, 1) is drawn by the caller."""

    generation: int
    lease: str
    weight: float
    retry_after: float | None = None
    trip_now: bool = False
    jitter_draw: float = 0.0
    calls: int = 1


class BreakerStore(Protocol):
    def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    def breaker_acquire(
        self, name: str, policy: BreakerPolicy, lease: str
    ) -> tuple[Permit | Denied, BreakerView]:
        """Ask to make a call through breaker ``name``; also returns the breaker's state."""

    def breaker_record(self, name: str, policy: BreakerPolicy, outcome: BreakerOutcome) -> Recorded:
        """Record one call's outcome, atomically with any transition it causes."""

    def breaker_release(self, name: str, policy: BreakerPolicy, generation: int, lease: str) -> None:
        """A probe gives its half-open slot back without an outcome."""

    def breaker_force(self, name: str, policy: BreakerPolicy, state: BreakerState) -> BreakerView:
        """Operator action: closed (reset), forced_open or disabled."""

    def breaker_read(self, name: str, policy: BreakerPolicy) -> BreakerView:
        """The breaker's state, windowed calls and weight, probes held."""

    def subscribe(self, listener: TransitionListener, breakers: Iterable[str]) -> None:
        """Call ``listener(name, view)`` on every transition of the named ``breakers`` made by
        any process sharing this store, as soon as it happens (a store may announce others
        too). ``listener(None, None)`` means the feed was interrupted: anything cached from
        it may be stale."""
